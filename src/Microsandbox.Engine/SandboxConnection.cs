using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Microsandbox.Protocol;

namespace Microsandbox.Engine;

/// <summary>One client connection to a sandbox runtime, after the handshake.</summary>
public sealed class SandboxConnection : IAsyncDisposable
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
    /// Runs a process and yields its output as it arrives, then its exit. Cancelling kills the
    /// process in the guest.
    /// </summary>
    public async IAsyncEnumerable<ExecEvent> ExecAsync(
        ExecRequest request, object target, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        uint session = _nextSession;
        _nextSession += 2;
        await _writer.WriteAsync(session, FrameType.ExecRequest, request, cancellationToken).ConfigureAwait(false);
        using var kill = cancellationToken.Register(() =>
            _ = _writer.WriteAsync(session, FrameType.Signal, new SignalRequest { Signal = 9 }).AsTask());
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

            if (frame.Session != session)
            {
                continue;
            }

            switch (frame.Type)
            {
                case FrameType.ExecStarted:
                    yield return ExecEvent.Started(frame.Read<ExecStarted>().Pid);
                    break;
                case FrameType.Stdout:
                    yield return ExecEvent.Output(OutputChannel.Stdout, frame.Payload);
                    break;
                case FrameType.Stderr:
                    yield return ExecEvent.Output(OutputChannel.Stderr, frame.Payload);
                    break;
                case FrameType.Exited:
                    var exited = frame.Read<ExecExited>();
                    yield return ExecEvent.Exit(exited.ExitCode, exited.Signal);
                    yield break;
                case FrameType.ExecFailed or FrameType.Error:
                    var error = frame.Read<ErrorMessage>();
                    throw new SandboxException(error.Code, KindOf(error.Code), error.Message, target);
                default:
                    break;
            }
        }
    }

    /// <summary>Asks the runtime to stop the sandbox: gracefully within <paramref name="timeout"/>, then by force.</summary>
    public Task RequestShutdownAsync(TimeSpan timeout, string reason, CancellationToken cancellationToken) =>
        _writer.WriteAsync(0, FrameType.Shutdown,
            new ShutdownRequest { TimeoutMilliseconds = (int)timeout.TotalMilliseconds, Reason = reason },
            cancellationToken).AsTask();

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync().ConfigureAwait(false);
        _writer.Dispose();
    }

    /// <summary>The kind of a failure the runtime or agent reported by its code.</summary>
    internal static SandboxErrorKind KindOf(string code) => code switch
    {
        "CommandNotFound" or "WorkingDirectoryNotFound" or "UserNotFound" => SandboxErrorKind.NotFound,
        "EmptyCommand" or "UserGroupNotSupported" => SandboxErrorKind.InvalidArgument,
        "PermissionDenied" => SandboxErrorKind.PermissionDenied,
        "GuestNotReady" => SandboxErrorKind.Timeout,
        _ => SandboxErrorKind.DeviceError,
    };
}

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

    internal static ExecEvent Exit(int code, int? signal) =>
        new() { Kind = ExecEventKind.Exited, ExitCode = code, Signal = signal };
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
