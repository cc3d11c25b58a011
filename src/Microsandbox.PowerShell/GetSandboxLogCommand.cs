using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Gets the console, runtime or command log of sandboxes.</para>
/// <para type="description">Writes the lines of a sandbox's log as strings: the guest console of its current or last boot (the default), the sandbox runtime's log over every start, or the command log, one line per command started and ended. -Tail keeps the last lines; -Wait follows the log until the sandbox stops or Ctrl+C is pressed. Each line carries the sandbox's name and the log's kind as SandboxName and LogKind properties.</para>
/// </summary>
[Cmdlet(VerbsCommon.Get, "SandboxLog", DefaultParameterSetName = ByName)]
[OutputType(typeof(string))]
public sealed class GetSandboxLogCommand : SandboxTargetCmdlet
{
    /// <summary>
    /// <para type="description">Which log: Console (default), Runtime or Command.</para>
    /// </summary>
    [Parameter]
    public SandboxLogKind Kind { get; set; } = SandboxLogKind.Console;

    /// <summary>
    /// <para type="description">Only the last lines, this many of them (0 gives none, and with -Wait only what comes next).</para>
    /// </summary>
    [Parameter]
    [ValidateRange(0, int.MaxValue)]
    public int Tail { get; set; } = -1;

    /// <summary>
    /// <para type="description">Keep writing lines as they are written, until the sandbox is no longer running or Ctrl+C is pressed. Sandboxes are followed one after another.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter Wait { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        foreach (Sandbox target in Targets())
        {
            try
            {
                Run(target);
            }
            catch (SandboxException ex)
            {
                WriteSandboxError(ex);
            }
        }
    }

    private void Run(Sandbox sandbox)
    {
        int? tail = Tail >= 0 ? Tail : null;
        IAsyncEnumerator<string> lines = Engine.ReadLogAsync(sandbox.Name, Kind, tail, Wait, Cancellation)
            .GetAsyncEnumerator(Cancellation);
        try
        {
            // The engine's awaits do not come back to this thread, so waiting here cannot deadlock.
            while (MoveNext(lines))
            {
                var line = new PSObject(lines.Current);
                line.Properties.Add(new PSNoteProperty("SandboxName", sandbox.Name));
                line.Properties.Add(new PSNoteProperty("LogKind", Kind));
                WriteObject(line);
            }
        }
        finally
        {
            lines.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    private bool MoveNext(IAsyncEnumerator<string> lines)
    {
        try
        {
            return lines.MoveNextAsync().AsTask().GetAwaiter().GetResult();
        }
        catch (OperationCanceledException) when (Cancellation.IsCancellationRequested)
        {
            return false;
        }
    }
}
