using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsandbox.Protocol;

namespace Microsandbox.Engine;

/// <summary>One client connection to a sandbox runtime, after the handshake.</summary>
public sealed partial class SandboxConnection : IAsyncDisposable
{
    private readonly NetworkStream _stream;
    private readonly FrameReader _reader;
    private readonly FrameWriter _writer;
    private uint _nextSession = 1;

    private SandboxConnection(NetworkStream stream, HelloMessage hello)
    {
        _stream = stream;
        _reader = new FrameReader(stream);
        _writer = new FrameWriter(stream);
        Hello = hello;
    }

    /// <summary>What the runtime said of itself and the guest.</summary>
    public HelloMessage Hello { get; private set; }

    /// <summary>Whether the guest's agent flow-controls sessions (the <c>window</c> capability).</summary>
    public bool SupportsFlowControl => Hello.Capabilities.Contains("window");

    /// <summary>
    /// Connects and waits for the runtime's hello, which it sends once the guest is ready. A boot
    /// failure arrives as the runtime's error and is thrown as a <see cref="SandboxException"/>.
    /// </summary>
    public static async Task<SandboxConnection> ConnectAsync(
        string socketPath, object target, CancellationToken cancellationToken)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken)
                .ConfigureAwait(false);
        }
        catch (SocketException ex)
        {
            socket.Dispose();
            throw new SandboxException("RuntimeUnreachable", SandboxErrorKind.DeviceError,
                $"Cannot reach the sandbox runtime at '{socketPath}': {ex.Message}", target, ex);
        }

        var stream = new NetworkStream(socket, ownsSocket: true);
        var connection = new SandboxConnection(stream, new HelloMessage());
        try
        {
            (connection.Hello, _) = await Handshake.AcceptAsync(
                connection._reader, connection._writer, "msb-engine", cancellationToken).ConfigureAwait(false);
            return connection;
        }
        catch (PeerErrorException ex)
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw new SandboxException(ex.Error.Code, KindOf(ex.Error.Code), ex.Error.Message, target, ex)
            {
                Detail = ex.Error.Detail,
            };
        }
        catch (Exception ex) when (ex is IOException or ProtocolException)
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw new SandboxException("RuntimeProtocolError", SandboxErrorKind.DeviceError,
                $"The sandbox runtime broke the protocol: {ex.Message}", target, ex);
        }
    }

    /// <summary>
    /// Runs a process and yields its output as it arrives, then its exit. Bytes read from
    /// <paramref name="stdin"/> become the process's standard input, which is closed when the
    /// reader completes. On a flow-controlled session the guest is granted more output only as the
    /// caller takes events, and stdin is sent only as the guest grants it, so a slow consumer or a
    /// process that does not read holds at most one window in memory. Cancelling kills the
    /// process in the guest.
    /// </summary>
    public async IAsyncEnumerable<ExecEvent> ExecAsync(
        ExecRequest request,
        ChannelReader<ReadOnlyMemory<byte>>? stdin,
        ChannelReader<SessionControl>? control,
        TimeSpan? timeout,
        object target,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        uint session = _nextSession;
        _nextSession += 2;
        bool flow = request.FlowControl;
        await _writer.WriteAsync(session, FrameType.ExecRequest, request, cancellationToken).ConfigureAwait(false);
        using var kill = cancellationToken.Register(() => KillTree(session));

        // Past the limit the tree is killed and the session ends as any other, with the real exit code.
        bool timedOut = false;
        using var limit = timeout is { } t ? new CancellationTokenSource(t) : null;
        using var onLimit = limit?.Token.Register(() =>
        {
            timedOut = true;
            KillTree(session);
        });
        FlowWindow? stdinWindow = flow && stdin is not null ? new FlowWindow() : null;
        using var sessionEnd = new CancellationTokenSource();
        Task feeding = stdin is null
            ? Task.CompletedTask
            : FeedStdinAsync(session, stdin, stdinWindow, sessionEnd.Token);
        Task controlling = control is null
            ? Task.CompletedTask
            : ForwardControlAsync(session, control, sessionEnd.Token);
        int consumed = 0;
        try
        {
            while (true)
            {
                if (flow && consumed >= FlowWindow.GrantThreshold)
                {
                    // The caller has taken these bytes: the guest may send as many more.
                    await _writer.WriteAsync(session, FrameType.Window, new WindowUpdate { Bytes = consumed },
                        cancellationToken).ConfigureAwait(false);
                    consumed = 0;
                }

                Frame frame = await NextFrameAsync(session, target, cancellationToken).ConfigureAwait(false);
                switch (frame.Type)
                {
                    case FrameType.ExecStarted:
                        yield return ExecEvent.Started(frame.Read<ExecStarted>().Pid);
                        break;
                    case FrameType.Stdout or FrameType.Stderr:
                        yield return ExecEvent.Output(
                            frame.Type == FrameType.Stdout ? OutputChannel.Stdout : OutputChannel.Stderr,
                            frame.Payload);
                        consumed += frame.Payload.Length;
                        break;
                    case FrameType.Window:
                        stdinWindow?.Grant(frame.Read<WindowUpdate>().Bytes);
                        break;
                    case FrameType.Exited:
                        var exited = frame.Read<ExecExited>();
                        yield return ExecEvent.Exit(exited.ExitCode, exited.Signal, timedOut);
                        yield break;
                    case FrameType.ExecFailed or FrameType.Error:
                        var error = frame.Read<ErrorMessage>();
                        throw new SandboxException(error.Code, KindOf(error.Code), error.Message, target);
                    default:
                        break;
                }
            }
        }
        finally
        {
            await sessionEnd.CancelAsync().ConfigureAwait(false);
            stdinWindow?.Close();
            await feeding.ConfigureAwait(false);
            await controlling.ConfigureAwait(false);
        }
    }

    /// <summary>Signals a guest process by its id, whichever client started it.</summary>
    public async Task SignalProcessAsync(
        int pid, int signal, bool processTree, object target, CancellationToken cancellationToken)
    {
        uint session = _nextSession;
        _nextSession += 2;
        await _writer.WriteAsync(session, FrameType.SignalProcess,
            new ProcessSignalRequest { Pid = pid, Signal = signal, ProcessTree = processTree }, cancellationToken)
            .ConfigureAwait(false);
        Frame frame = await NextFrameAsync(session, target, cancellationToken).ConfigureAwait(false);
        if (frame.Type is FrameType.ExecFailed or FrameType.Error)
        {
            var error = frame.Read<ErrorMessage>();
            throw new SandboxException(error.Code, KindOf(error.Code), error.Message, pid);
        }
    }

    // Resizes and signals for the running command, sent as the caller asks for them.
    private async Task ForwardControlAsync(uint session, ChannelReader<SessionControl> control, CancellationToken end)
    {
        try
        {
            await foreach (SessionControl item in control.ReadAllAsync(end).ConfigureAwait(false))
            {
                if (item.Resize is { } size)
                {
                    await _writer.WriteAsync(session, FrameType.Resize, size, end).ConfigureAwait(false);
                }

                if (item.Signal is int signal)
                {
                    await _writer.WriteAsync(session, FrameType.Signal,
                        new SignalRequest { Signal = signal, ProcessTree = item.ProcessTree }, end)
                        .ConfigureAwait(false);
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or ChannelClosedException)
        {
            // The session ended or the connection broke; the reader reports which.
        }
    }

    private void KillTree(uint session) =>
        _ = _writer.WriteAsync(session, FrameType.Signal, new SignalRequest { Signal = 9, ProcessTree = true })
            .AsTask();

    // The next frame of this session; the connection carries one command at a time.
    private async Task<Frame> NextFrameAsync(uint session, object target, CancellationToken cancellationToken)
    {
        while (true)
        {
            Frame? next;
            try
            {
                next = await _reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or ProtocolException)
            {
                throw new SandboxException("SandboxConnectionLost", SandboxErrorKind.DeviceError,
                    $"The connection to the sandbox broke during the command: {ex.Message}", target, ex);
            }

            if (next is not Frame frame)
            {
                throw new SandboxException("SandboxConnectionLost", SandboxErrorKind.DeviceError,
                    "The sandbox stopped while the command was running.", target);
            }

            if (frame.Session == session)
            {
                return frame;
            }
        }
    }

    // Sends what the caller writes as stdin frames, within the guest's grants, then closes stdin.
    // Ends quietly when the session ends first: input the process never needed is dropped.
    private async Task FeedStdinAsync(
        uint session, ChannelReader<ReadOnlyMemory<byte>> stdin, FlowWindow? window, CancellationToken sessionEnd)
    {
        const int chunk = 64 * 1024;
        try
        {
            await foreach (ReadOnlyMemory<byte> data in stdin.ReadAllAsync(sessionEnd).ConfigureAwait(false))
            {
                for (int sent = 0; sent < data.Length;)
                {
                    int size = Math.Min(chunk, data.Length - sent);
                    if (window is not null)
                    {
                        size = await window.TakeAsync(size, sessionEnd).ConfigureAwait(false);
                        if (size == 0)
                        {
                            return;
                        }
                    }

                    await _writer.WriteAsync(session, FrameType.Stdin, data.Slice(sent, size), sessionEnd)
                        .ConfigureAwait(false);
                    sent += size;
                }
            }

            await _writer.WriteAsync(session, FrameType.Stdin, ReadOnlyMemory<byte>.Empty, sessionEnd)
                .ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or ChannelClosedException)
        {
            // The session ended or the connection broke; the reader reports which.
        }
    }

    /// <summary>Asks the runtime to stop the sandbox: gracefully within <paramref name="timeout"/>, then by force.</summary>
    public Task RequestShutdownAsync(TimeSpan timeout, string reason, CancellationToken cancellationToken) =>
        _writer.WriteAsync(0, FrameType.Shutdown,
            new ShutdownRequest { TimeoutMilliseconds = (int)timeout.TotalMilliseconds, Reason = reason },
            cancellationToken).AsTask();

    /// <summary>
    /// Tells the runtime of a sandbox booted held (<see cref="RuntimeSpec.HoldUntilReleased"/>)
    /// that its setup is done, so it reports the sandbox Running.
    /// </summary>
    public Task ReleaseAsync(CancellationToken cancellationToken) =>
        _writer.WriteAsync(0, FrameType.Release, ReadOnlyMemory<byte>.Empty, cancellationToken).AsTask();

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync().ConfigureAwait(false);
        _writer.Dispose();
    }

    /// <summary>The kind of a failure the runtime or agent reported by its code.</summary>
    internal static SandboxErrorKind KindOf(string code) => code switch
    {
        "CommandNotFound" or "WorkingDirectoryNotFound" or "UserNotFound" or "ProcessNotFound"
            => SandboxErrorKind.NotFound,
        "EmptyCommand" or "UserGroupNotSupported" => SandboxErrorKind.InvalidArgument,
        "PermissionDenied" => SandboxErrorKind.PermissionDenied,
        "GuestNotReady" => SandboxErrorKind.Timeout,
        _ => SandboxErrorKind.DeviceError,
    };
}

/// <summary>Something to tell a running command besides its input.</summary>
/// <param name="Resize">A new size for its terminal.</param>
/// <param name="Signal">A Linux signal number to send it.</param>
/// <param name="ProcessTree">Whether the signal goes to every process the command started, too.</param>
public sealed record SessionControl(TerminalSize? Resize = null, int? Signal = null, bool ProcessTree = false);

/// <summary>Which output stream a chunk came from.</summary>
public enum OutputChannel
{
    /// <summary>Standard output.</summary>
    Stdout,

    /// <summary>Standard error.</summary>
    Stderr,
}

/// <summary>Something that happened to a running command.</summary>
public sealed class ExecEvent
{
    private ExecEvent()
    {
    }

    /// <summary>Started, Output or Exited.</summary>
    public ExecEventKind Kind { get; private init; }

    /// <summary>For output: which stream.</summary>
    public OutputChannel Stream { get; private init; }

    /// <summary>For output: the raw bytes.</summary>
    public ReadOnlyMemory<byte> Data { get; private init; }

    /// <summary>For started: the guest process id.</summary>
    public int Pid { get; private init; }

    /// <summary>For exited: the exit code.</summary>
    public int ExitCode { get; private init; }

    /// <summary>For exited: the signal that ended the process, if any.</summary>
    public int? Signal { get; private init; }

    internal static ExecEvent Started(int pid) => new() { Kind = ExecEventKind.Started, Pid = pid };

    internal static ExecEvent Output(OutputChannel stream, ReadOnlyMemory<byte> data) =>
        new() { Kind = ExecEventKind.Output, Stream = stream, Data = data };

    /// <summary>Whether the engine killed the process because its time limit passed.</summary>
    public bool TimedOut { get; private init; }

    internal static ExecEvent Exit(int code, int? signal, bool timedOut = false) =>
        new() { Kind = ExecEventKind.Exited, ExitCode = code, Signal = signal, TimedOut = timedOut };
}

/// <summary>The kinds of <see cref="ExecEvent"/>.</summary>
public enum ExecEventKind
{
    /// <summary>The process started.</summary>
    Started,

    /// <summary>Output arrived.</summary>
    Output,

    /// <summary>The process ended.</summary>
    Exited,
}
