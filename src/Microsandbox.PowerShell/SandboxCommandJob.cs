using System.Management.Automation;
using System.Threading.Channels;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// A command running in a sandbox in the background, as Invoke-SandboxCommand -AsJob starts it.
/// The job is named after its sandbox and carries the command's process id in the guest, so that
/// <c>$job | Send-SandboxSignal</c> reaches the process. Output lines go to the job's output,
/// standard error lines to its errors; it completes when the command exits with 0, fails
/// otherwise, and stops (killing the process tree in the guest) with Stop-Job.
/// </summary>
public sealed class SandboxCommandJob : Job
{
    private readonly CancellationTokenSource _stop = new();

    internal SandboxCommandJob(string command, string sandbox)
        : base(command, sandbox)
    {
        PSJobTypeName = nameof(SandboxCommandJob);
        Sandbox = sandbox;
    }

    /// <summary>The sandbox the command runs in.</summary>
    public string Sandbox { get; }

    /// <summary>The command's process id in the guest, once it has started.</summary>
    public int? ProcessId { get; private set; }

    /// <summary>The command's exit code, once it has ended.</summary>
    public int? ExitCode { get; private set; }

    /// <inheritdoc/>
    public override string StatusMessage =>
        ExitCode is int code ? $"Exit code {code}" : ProcessId is int pid ? $"Running as process {pid}" : "";

    /// <inheritdoc/>
    public override bool HasMoreData => Output.Count > 0 || Error.Count > 0;

    /// <inheritdoc/>
    public override string Location => Sandbox;

    /// <inheritdoc/>
    public override void StopJob()
    {
        if (!IsFinishedState(JobStateInfo.State))
        {
            _stop.Cancel();
        }
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _stop.Dispose();
        }

        base.Dispose(disposing);
    }

    internal void Start(
        SandboxEngine engine, SandboxCommand command, bool mergeError, bool asByteStream, string? inputFile)
    {
        SetJobState(JobState.Running);
        _ = Task.Run(() => RunAsync(engine, command, mergeError, asByteStream, inputFile), CancellationToken.None);
    }

    private static bool IsFinishedState(JobState state) =>
        state is JobState.Completed or JobState.Failed or JobState.Stopped;

    private async Task RunAsync(
        SandboxEngine engine, SandboxCommand command, bool mergeError, bool asByteStream, string? inputFile)
    {
        var stdout = new LineSplitter();
        var stderr = new LineSplitter();
        try
        {
            Channel<ReadOnlyMemory<byte>>? input =
                inputFile is null ? null : Channel.CreateBounded<ReadOnlyMemory<byte>>(8);
            Task feeding = input is null ? Task.CompletedTask : FeedAsync(inputFile!, input.Writer, _stop.Token);
            SandboxCommand run = command with { StandardInput = input?.Reader };
            await foreach (ExecEvent e in engine.ExecAsync(Sandbox, run, _stop.Token).ConfigureAwait(false))
            {
                switch (e.Kind)
                {
                    case ExecEventKind.Started:
                        ProcessId = e.Pid;
                        break;
                    case ExecEventKind.Output when asByteStream && (e.Stream == OutputChannel.Stdout || mergeError):
                        Output.Add(PSObject.AsPSObject(e.Data.ToArray()));
                        break;
                    case ExecEventKind.Output:
                        bool isError = e.Stream == OutputChannel.Stderr && !mergeError;
                        LineSplitter lines = e.Stream == OutputChannel.Stdout ? stdout : stderr;
                        foreach (string line in lines.Add(e.Data.Span))
                        {
                            Write(line, isError);
                        }

                        break;
                    case ExecEventKind.Exited:
                        ExitCode = e.ExitCode;
                        if (e.TimedOut)
                        {
                            Error.Add(SandboxCmdlet.ToErrorRecord(new SandboxException("SandboxCommandTimedOut",
                                SandboxErrorKind.Timeout, $"The command '{Command}' ran longer than its time limit "
                                + $"in sandbox '{Sandbox}'; its process tree was killed.", Sandbox)));
                        }

                        break;
                }
            }

            await feeding.ConfigureAwait(false);
            Flush(stdout, isError: false);
            Flush(stderr, isError: !mergeError);
            SetJobState(ExitCode == 0 ? JobState.Completed : JobState.Failed);
        }
        catch (OperationCanceledException)
        {
            SetJobState(JobState.Stopped);
        }
        catch (SandboxException ex)
        {
            Error.Add(SandboxCmdlet.ToErrorRecord(ex));
            SetJobState(JobState.Failed);
        }
        catch (IOException ex)
        {
            Error.Add(new ErrorRecord(ex, "InputFileNotFound", ErrorCategory.ReadError, inputFile));
            SetJobState(JobState.Failed);
        }
    }

    private static async Task FeedAsync(string path, ChannelWriter<ReadOnlyMemory<byte>> input, CancellationToken stop)
    {
        try
        {
            await using FileStream file = File.OpenRead(path);
            while (true)
            {
                var buffer = new byte[64 * 1024];
                int n = await file.ReadAsync(buffer, stop).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                await input.WriteAsync(buffer.AsMemory(0, n), stop).ConfigureAwait(false);
            }
        }
        finally
        {
            input.TryComplete();
        }
    }

    private void Flush(LineSplitter lines, bool isError)
    {
        if (lines.Flush() is { } last)
        {
            Write(last, isError);
        }
    }

    private void Write(string line, bool isError)
    {
        if (isError)
        {
            Error.Add(new ErrorRecord(
                new RemoteException(line), "SandboxCommandStderr", ErrorCategory.FromStdErr, Sandbox));
        }
        else
        {
            Output.Add(PSObject.AsPSObject(line));
        }
    }
}
