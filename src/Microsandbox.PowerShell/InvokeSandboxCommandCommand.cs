using System.Collections;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Runs a command in a sandbox.</para>
/// <para type="description">Runs a shell command string (with the sandbox's shell) or a program with arguments in a running sandbox. Standard output lines reach the pipeline as they arrive; standard error lines go to the error stream. The exit code is stored in $LASTEXITCODE, and a non-zero exit writes a SandboxCommandFailed error unless -PassThru is given.</para>
/// </summary>
[Cmdlet(VerbsLifecycle.Invoke, "SandboxCommand", DefaultParameterSetName = "Command")]
[OutputType(typeof(string), typeof(SandboxCommandResult))]
public sealed class InvokeSandboxCommandCommand : SandboxCmdlet
{
    /// <summary>
    /// <para type="description">The sandbox to run in. Binds from the Name property of piped sandbox objects.</para>
    /// </summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(SandboxNameCompleter))]
    public string Name { get; set; } = "";

    /// <summary>
    /// <para type="description">A command string for the sandbox's shell (sh -c).</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = "Command")]
    [ValidateNotNullOrEmpty]
    public string Command { get; set; } = "";

    /// <summary>
    /// <para type="description">A program to run without a shell: an absolute path, or a name looked up on PATH in the guest.</para>
    /// </summary>
    [Parameter(Mandatory = true, ParameterSetName = "FilePath")]
    [ValidateNotNullOrEmpty]
    public string FilePath { get; set; } = "";

    /// <summary>
    /// <para type="description">Run the image's own command: its Entrypoint followed by -ArgumentList, or by its Cmd when no arguments are given, as docker run does.</para>
    /// </summary>
    [Parameter(Mandatory = true, ParameterSetName = "ImageCommand")]
    public SwitchParameter UseImageCommand { get; set; }

    /// <summary>
    /// <para type="description">Arguments for -FilePath, passed as they are, without shell parsing; with -UseImageCommand, they replace the image's Cmd.</para>
    /// </summary>
    [Parameter(Position = 0, ParameterSetName = "FilePath")]
    [Parameter(Position = 0, ParameterSetName = "ImageCommand")]
    public string[] ArgumentList { get; set; } = [];

    /// <summary>
    /// <para type="description">Environment variables for this command, added to the sandbox's.</para>
    /// </summary>
    [Parameter]
    public Hashtable? Environment { get; set; }

    /// <summary>
    /// <para type="description">Working directory for this command; it must exist.</para>
    /// </summary>
    [Parameter]
    public string? WorkingDirectory { get; set; }

    /// <summary>
    /// <para type="description">The user to run as: a name or uid from the sandbox's /etc/passwd, optionally with :group. Default: the sandbox's user (New-Sandbox -User, else the image's, else root).</para>
    /// </summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? User { get; set; }

    /// <summary>
    /// <para type="description">Return one result object (ExitCode, Stdout, Stderr, Duration) instead of streaming lines.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        var command = new SandboxCommand
        {
            Script = ParameterSetName == "Command" ? Command : null,
            Arguments = ParameterSetName switch
            {
                "FilePath" => [FilePath, .. ArgumentList],
                "ImageCommand" => ArgumentList,
                _ => null,
            },
            Environment = ToDictionary(Environment),
            WorkingDirectory = WorkingDirectory,
            User = User,
            UseImageCommand = UseImageCommand,
        };
        string display = ParameterSetName switch
        {
            "Command" => Command,
            "ImageCommand" => string.Join(' ', ["(image command)", .. ArgumentList]),
            _ => string.Join(' ', command.Arguments!),
        };
        var stdout = new LineSplitter();
        var stderr = new LineSplitter();
        var started = DateTimeOffset.Now;
        var clock = Stopwatch.StartNew();
        int? exitCode = null;
        try
        {
            foreach (ExecEvent e in Stream(command))
            {
                switch (e.Kind)
                {
                    case ExecEventKind.Started:
                        WriteDebug($"Started process {e.Pid} in sandbox '{Name}'.");
                        break;
                    case ExecEventKind.Output when e.Stream == OutputChannel.Stdout:
                        foreach (string line in stdout.Add(e.Data.Span))
                        {
                            WriteLine(line);
                        }

                        break;
                    case ExecEventKind.Output:
                        foreach (string line in stderr.Add(e.Data.Span))
                        {
                            WriteStderr(line);
                        }

                        break;
                    case ExecEventKind.Exited:
                        exitCode = e.ExitCode;
                        break;
                }
            }
        }
        catch (SandboxException ex)
        {
            WriteSandboxError(ex);
            return;
        }

        if (stdout.Flush() is { } lastOut)
        {
            WriteLine(lastOut);
        }

        if (stderr.Flush() is { } lastErr)
        {
            WriteStderr(lastErr);
        }

        int code = exitCode ?? -1;
        SessionState.PSVariable.Set("global:LASTEXITCODE", code);
        WriteVerbose($"'{display}' exited with code {code} after {clock.Elapsed.TotalMilliseconds:0} ms.");
        if (PassThru)
        {
            WriteObject(new SandboxCommandResult(
                Name, display, code, stdout.Text, stderr.Text, started, clock.Elapsed));
        }
        else if (code != 0)
        {
            WriteSandboxError(new SandboxException("SandboxCommandFailed", SandboxErrorKind.InvalidResult,
                $"The command '{display}' exited with code {code} in sandbox '{Name}'.", Name));
        }
    }

    /// <summary>
    /// The command's events on the pipeline thread, in arrival order, while the engine reads the
    /// connection on the thread pool.
    /// </summary>
    private IEnumerable<ExecEvent> Stream(SandboxCommand command)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Cancellation);
        using var events = new BlockingCollection<ExecEvent>(boundedCapacity: 256);
        Task pump = Task.Run(async () =>
        {
            try
            {
                await foreach (ExecEvent e in Engine.ExecAsync(Name, command, stop.Token).ConfigureAwait(false))
                {
                    events.Add(e, stop.Token);
                }
            }
            finally
            {
                events.CompleteAdding();
            }
        });
        try
        {
            foreach (ExecEvent e in events.GetConsumingEnumerable())
            {
                yield return e;
            }
        }
        finally
        {
            // Leaving early (Ctrl+C, or -ErrorAction Stop on a stderr line) kills the guest
            // process: cancelling the engine's read sends it SIGKILL.
            if (!pump.IsCompleted)
            {
                stop.Cancel();
            }

            try
            {
                pump.GetAwaiter().GetResult();
            }
            catch (OperationCanceledException)
            {
                // Cancelled above or by Ctrl+C; PowerShell reports the stop itself.
            }
        }
    }

    private void WriteLine(string line)
    {
        if (!PassThru)
        {
            WriteObject(line);
        }
    }

    private void WriteStderr(string line)
    {
        if (!PassThru)
        {
            WriteError(new ErrorRecord(new RemoteException(line), "SandboxCommandStderr", ErrorCategory.FromStdErr, Name));
        }
    }
}
