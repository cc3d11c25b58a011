using System.Collections;
using System.Management.Automation;
using System.Runtime.InteropServices;
using System.Threading.Channels;
using Microsandbox.Engine;
using Microsandbox.Protocol;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Starts an interactive shell in a sandbox, on a terminal.</para>
/// <para type="description">Runs the sandbox's shell (or a command) on a pseudo-terminal in the guest and connects it to this console, as Enter-PSSession connects to a remote computer: every key goes to the guest, Ctrl+C included, the terminal's size follows this window, and the shell's exit returns to PowerShell with its exit code in $LASTEXITCODE.</para>
/// </summary>
[Cmdlet(VerbsCommon.Enter, "Sandbox")]
[OutputType(typeof(void))]
public sealed class EnterSandboxCommand : SandboxCmdlet
{
    /// <summary>
    /// <para type="description">The sandbox to enter. Binds from the Name property of piped sandbox objects.</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(SandboxNameCompleter))]
    public string Name { get; set; } = "";

    /// <summary>
    /// <para type="description">A command line to run on the terminal with the sandbox's shell, instead of an interactive shell.</para>
    /// </summary>
    [Parameter(Position = 1)]
    [ValidateNotNullOrEmpty]
    public string? Command { get; set; }

    /// <summary>
    /// <para type="description">The user to run as: a name or uid from the sandbox's /etc/passwd, optionally with :group. Default: the sandbox's user.</para>
    /// </summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? User { get; set; }

    /// <summary>
    /// <para type="description">The directory the shell starts in; it must exist. Default: the sandbox's working directory.</para>
    /// </summary>
    [Parameter]
    public string? WorkingDirectory { get; set; }

    /// <summary>
    /// <para type="description">Environment variables for the shell, added to the sandbox's.</para>
    /// </summary>
    [Parameter]
    public Hashtable? Environment { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        if (OperatingSystem.IsWindows())
        {
            ThrowTerminatingError(new ErrorRecord(
                new PlatformNotSupportedException("Enter-Sandbox needs a Unix terminal."),
                "TerminalNotSupported", ErrorCategory.NotImplemented, Name));
            return;
        }

        Sandbox sandbox;
        try
        {
            sandbox = Engine.Get(Name);
        }
        catch (SandboxException ex)
        {
            SessionState.PSVariable.Set("global:LASTEXITCODE", CommandRun.ExitCodeOf(ex));
            WriteSandboxError(ex);
            return;
        }

        var environment = ToDictionary(Environment);
        if (!environment.ContainsKey("TERM"))
        {
            environment["TERM"] = System.Environment.GetEnvironmentVariable("TERM") is { Length: > 0 } term
                ? term : "xterm-256color";
        }

        var keys = Channel.CreateBounded<ReadOnlyMemory<byte>>(new BoundedChannelOptions(64) { SingleReader = true });
        var control = Channel.CreateUnbounded<SessionControl>();
        var command = new SandboxCommand
        {
            Arguments = Command is null ? [sandbox.Shell] : [sandbox.Shell, "-c", Command],
            Environment = environment,
            WorkingDirectory = WorkingDirectory,
            User = User,
            Terminal = WindowSize(),
            StandardInput = keys.Reader,
            Control = control.Reader,
        };

        WriteVerbose($"Entering sandbox '{Name}' on a {command.Terminal.Rows}x{command.Terminal.Columns} terminal.");
        int? exitCode = null;
        SandboxException? failure = null;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Cancellation);
        using (IDisposable? raw = HostTerminal.EnterRawMode())
        using (PosixSignalRegistration resize = PosixSignalRegistration.Create(PosixSignal.SIGWINCH,
            _ => control.Writer.TryWrite(new SessionControl(Resize: WindowSize()))))
        {
            Task typing = Task.Run(() => ForwardKeys(keys.Writer, stop.Token), CancellationToken.None);
            try
            {
                exitCode = Task.Run(() => RunAsync(command, stop.Token), CancellationToken.None)
                    .GetAwaiter().GetResult();
            }
            catch (SandboxException ex)
            {
                failure = ex;
            }
            catch (OperationCanceledException)
            {
                // Stopped from PowerShell; the guest process was killed.
            }
            finally
            {
                stop.Cancel();
                typing.GetAwaiter().GetResult();
            }
        }

        if (failure is not null)
        {
            SessionState.PSVariable.Set("global:LASTEXITCODE", CommandRun.ExitCodeOf(failure));
            WriteSandboxError(failure);
            return;
        }

        if (exitCode is int code)
        {
            SessionState.PSVariable.Set("global:LASTEXITCODE", code);
            WriteVerbose($"Left sandbox '{Name}'; the shell exited with code {code}.");
        }
    }

    private static TerminalSize WindowSize() => HostTerminal.WindowSize() is var (rows, columns)
        ? new TerminalSize { Rows = rows, Columns = columns }
        // No terminal on either stream: the size a terminal has when nothing says otherwise.
        : new TerminalSize { Rows = 24, Columns = 80 };

    // Keys go to the guest until the session ends. At the end of a piped (not typed) input, the
    // terminal's end-of-file character follows, so a shell reading it exits as it would at a tty.
    private static async Task ForwardKeys(ChannelWriter<ReadOnlyMemory<byte>> keys, CancellationToken stop)
    {
        try
        {
            while (!stop.IsCancellationRequested)
            {
                byte[]? read = HostTerminal.Read(100);
                if (read is null)
                {
                    await keys.WriteAsync(new byte[] { 4 }, stop).ConfigureAwait(false);
                    return;
                }

                if (read.Length > 0)
                {
                    await keys.WriteAsync(read, stop).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException)
        {
            // The session ended.
        }
        finally
        {
            keys.TryComplete();
        }
    }

    private async Task<int?> RunAsync(SandboxCommand command, CancellationToken cancellationToken)
    {
        using Stream screen = Console.OpenStandardOutput();
        int? exitCode = null;
        await foreach (ExecEvent e in Engine.ExecAsync(Name, command, cancellationToken).ConfigureAwait(false))
        {
            if (e.Kind == ExecEventKind.Output)
            {
                await screen.WriteAsync(e.Data, cancellationToken).ConfigureAwait(false);
                await screen.FlushAsync(cancellationToken).ConfigureAwait(false);
            }
            else if (e.Kind == ExecEventKind.Exited)
            {
                exitCode = e.ExitCode;
            }
        }

        return exitCode;
    }
}
