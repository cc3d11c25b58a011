namespace Microsandbox.Protocol;

/// <summary>
/// The sender's side of a flow-controlled stream: how many bytes it may still send before the
/// receiver grants more with <see cref="FrameType.Window"/>. A sender takes credit before each
/// data frame and waits while it has none, so no peer ever holds more than one window of a
/// session's data that its consumer has not taken.
/// </summary>
public sealed class FlowWindow
{
    /// <summary>The credit each direction of a flow-controlled session starts with.</summary>
    public const int InitialBytes = 256 * 1024;

    /// <summary>A receiver grants credit once it has consumed at least this much, not per frame.</summary>
    public const int GrantThreshold = 64 * 1024;

    private readonly object _gate = new();
    private long _available;
    private bool _closed;
    private TaskCompletionSource? _waiter;

    /// <summary>Creates a window with <paramref name="initialBytes"/> of credit.</summary>
    public FlowWindow(long initialBytes = InitialBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(initialBytes);
        _available = initialBytes;
    }

    /// <summary>Credit not yet taken.</summary>
    public long Available
    {
        get
        {
            lock (_gate)
            {
                return _available;
            }
        }
    }

    /// <summary>
    /// Takes up to <paramref name="wanted"/> bytes of credit, waiting while there is none. Returns
    /// how much was taken: at least 1, or 0 once the window is closed.
    /// </summary>
    public async ValueTask<int> TakeAsync(int wanted, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(wanted);
        while (true)
        {
            Task wait;
            lock (_gate)
            {
                if (_closed)
                {
                    return 0;
                }

                if (_available > 0)
                {
                    int taken = (int)Math.Min(wanted, _available);
                    _available -= taken;
                    return taken;
                }

                _waiter ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                wait = _waiter.Task;
            }

            await wait.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Adds credit the receiver granted, waking a waiting sender.</summary>
    public void Grant(long bytes)
    {
        if (bytes <= 0)
        {
            return;
        }

        TaskCompletionSource? waiter;
        lock (_gate)
        {
            _available += bytes;
            waiter = _waiter;
            _waiter = null;
        }

        waiter?.TrySetResult();
    }

    /// <summary>Ends the window: a waiting sender and every later take get 0.</summary>
    public void Close()
    {
        TaskCompletionSource? waiter;
        lock (_gate)
        {
            _closed = true;
            waiter = _waiter;
            _waiter = null;
        }

        waiter?.TrySetResult();
    }
}
