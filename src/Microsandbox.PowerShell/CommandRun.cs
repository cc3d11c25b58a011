using System.Threading.Channels;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// One command running in a sandbox, seen from the pipeline thread: the engine reads its events on
/// the thread pool into a small bounded queue, and the pipeline thread takes them, writes its
/// stdin and never blocks on one without serving the other, so a process that writes while the
/// cmdlet is still feeding it cannot deadlock the two.
/// </summary>
internal sealed class CommandRun : IDisposable
{
    private readonly Channel<ExecEvent> _events =
        Channel.CreateBounded<ExecEvent>(new BoundedChannelOptions(64) { SingleWriter = true, SingleReader = true });
    private readonly Channel<ReadOnlyMemory<byte>>? _stdin;
    private readonly CancellationTokenSource _stop;
    private readonly Task _pump;

    public CommandRun(
        SandboxEngine engine, string name, SandboxCommand command, bool withStdin, CancellationToken cancellation)
    {
        _stop = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        _stdin = withStdin
            ? Channel.CreateBounded<ReadOnlyMemory<byte>>(new BoundedChannelOptions(8) { SingleReader = true })
            : null;
        SandboxCommand run = command with { StandardInput = _stdin?.Reader };
        CancellationToken token = _stop.Token;
        _pump = Task.Run(async () =>
        {
            try
            {
                await foreach (ExecEvent e in engine.ExecAsync(name, run, token).ConfigureAwait(false))
                {
                    await _events.Writer.WriteAsync(e, token).ConfigureAwait(false);
                }

                _events.Writer.TryComplete();
            }
            catch (Exception ex)
            {
                _events.Writer.TryComplete(ex);
            }
        }, CancellationToken.None);
    }

    /// <summary>
    /// The exit code for <c>$LASTEXITCODE</c> when the command failed to start or its end is unknown
    /// (the sandbox stopped, the connection was lost), as a shell gives it: 127 for a program not
    /// found, 126 for one found but not runnable, -1 for every other failure.
    /// </summary>
    public static int ExitCodeOf(SandboxException failure)
    {
        ArgumentNullException.ThrowIfNull(failure);
        return failure.ErrorId switch
        {
            "CommandNotFound" => 127,
            "PermissionDenied" => 126,
            _ => -1,
        };
    }

    /// <summary>Takes every event that has arrived, without waiting.</summary>
    public IEnumerable<ExecEvent> Available()
    {
        while (_events.Reader.TryRead(out ExecEvent? e))
        {
            yield return e;
        }
    }

    /// <summary>
    /// Waits for the next event; null when the command is over. A failure of the run (the
    /// engine's <see cref="SandboxException"/>, or cancellation) is thrown here.
    /// </summary>
    public ExecEvent? Next()
    {
        try
        {
            while (_events.Reader.WaitToReadAsync(_stop.Token).AsTask().GetAwaiter().GetResult())
            {
                if (_events.Reader.TryRead(out ExecEvent? e))
                {
                    return e;
                }
            }

            // Completed: rethrow the pump's failure, if any.
            _events.Reader.Completion.GetAwaiter().GetResult();
            return null;
        }
        catch (ChannelClosedException ex) when (ex.InnerException is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(ex.InnerException).Throw();
            throw;
        }
    }

    /// <summary>
    /// Queues bytes for the command's stdin, handing every event that arrives while it waits for
    /// room to <paramref name="onEvent"/>. Returns false when the command has ended and takes no input.
    /// </summary>
    public bool WriteInput(ReadOnlyMemory<byte> data, Action<ExecEvent> onEvent)
    {
        ArgumentNullException.ThrowIfNull(onEvent);
        Channel<ReadOnlyMemory<byte>> stdin = _stdin ?? throw new InvalidOperationException("No stdin.");
        while (!stdin.Writer.TryWrite(data))
        {
            if (_events.Reader.Completion.IsCompleted)
            {
                return false;
            }

            Task room = stdin.Writer.WaitToWriteAsync(_stop.Token).AsTask();
            Task news = _events.Reader.WaitToReadAsync(_stop.Token).AsTask();
            Task.WaitAny(room, news);
            foreach (ExecEvent e in Available())
            {
                onEvent(e);
            }

            _stop.Token.ThrowIfCancellationRequested();
        }

        return true;
    }

    /// <summary>No more stdin: the process reads end of file once it has taken what was sent.</summary>
    public void CompleteInput() => _stdin?.Writer.TryComplete();

    /// <summary>Stops the command if it still runs (killing its process in the guest); waits for the engine.</summary>
    public void Dispose()
    {
        if (!_pump.IsCompleted)
        {
            _stop.Cancel();
        }

        _stdin?.Writer.TryComplete();
        try
        {
            _pump.GetAwaiter().GetResult();
        }
        catch (OperationCanceledException)
        {
            // Cancelled above or by Ctrl+C.
        }

        _stop.Dispose();
    }
}
