using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Waits until sandboxes have stopped.</para>
/// <para type="description">Waits until each sandbox is no longer starting, running or stopping: it was stopped, stopped itself (a guest that powered off, a maximum duration or idle timeout that ran out, an attached pwsh that exited) or crashed. A sandbox that is not running is done at once. With -Timeout, a sandbox still running then is a non-terminating WaitSandboxTimeout error.</para>
/// </summary>
[Cmdlet(VerbsLifecycle.Wait, "Sandbox", DefaultParameterSetName = ByName)]
[OutputType(typeof(Sandbox))]
public sealed class WaitSandboxCommand : SandboxTargetCmdlet
{
    /// <summary>
    /// <para type="description">Seconds to wait for each sandbox; 0 or omitted waits as long as it takes.</para>
    /// </summary>
    [Parameter]
    [ValidateRange(0, int.MaxValue)]
    public int Timeout { get; set; }

    /// <summary>
    /// <para type="description">Emit each sandbox once it has stopped, with its state and the reason it stopped.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <inheritdoc/>
    protected override int BulkLimit => int.MaxValue;

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        foreach (Sandbox target in Targets())
        {
            Enqueue(target);
        }
    }

    /// <inheritdoc/>
    protected override void EndProcessing()
    {
        TimeSpan? timeout = Timeout > 0 ? TimeSpan.FromSeconds(Timeout) : null;
        RunQueued(async (s, progress, token) =>
        {
            progress.Report(new(SandboxMessageLevel.Verbose, $"Waiting for sandbox '{s.Name}' to stop."));
            Sandbox stopped = await Engine.WaitForStopAsync(s.Name, timeout, token).ConfigureAwait(false);
            return PassThru ? stopped : null;
        });
    }
}
