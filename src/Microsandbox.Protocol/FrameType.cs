namespace Microsandbox.Protocol;

/// <summary>The kind of a frame. Values are part of the wire format and never change.</summary>
public enum FrameType : byte
{
    /// <summary>First frame from the side that is ready: versions and capabilities (JSON).</summary>
    Hello = 0x01,

    /// <summary>Answer to <see cref="Hello"/>: the chosen version (JSON).</summary>
    HelloAck = 0x02,

    /// <summary>Liveness probe; the payload is echoed in <see cref="Pong"/>.</summary>
    Ping = 0x03,

    /// <summary>Answer to <see cref="Ping"/>.</summary>
    Pong = 0x04,

    /// <summary>A failure of the connection or of one session (JSON <see cref="ErrorMessage"/>).</summary>
    Error = 0x05,

    /// <summary>Start a process in the guest; opens the session (JSON <see cref="ExecRequest"/>).</summary>
    ExecRequest = 0x10,

    /// <summary>The process started (JSON <see cref="ExecStarted"/>).</summary>
    ExecStarted = 0x11,

    /// <summary>Raw bytes the process wrote to standard output.</summary>
    Stdout = 0x12,

    /// <summary>Raw bytes the process wrote to standard error.</summary>
    Stderr = 0x13,

    /// <summary>Raw bytes for the process's standard input; an empty payload closes it.</summary>
    Stdin = 0x14,

    /// <summary>The process ended; the last frame of its session (JSON <see cref="ExecExited"/>).</summary>
    Exited = 0x15,

    /// <summary>The process could not start; the last frame of its session (JSON <see cref="ErrorMessage"/>).</summary>
    ExecFailed = 0x16,

    /// <summary>Deliver a signal to the session's process (JSON <see cref="SignalRequest"/>).</summary>
    Signal = 0x17,

    /// <summary>
    /// Credit for more data on a flow-controlled session (JSON <see cref="WindowUpdate"/>): the
    /// receiver of Stdout and Stderr grants the agent more output, the agent grants the host more stdin.
    /// </summary>
    Window = 0x18,

    /// <summary>The terminal of a terminal session changed size (JSON <see cref="TerminalSize"/>).</summary>
    Resize = 0x19,

    /// <summary>
    /// Deliver a signal to any guest process by its id (JSON <see cref="ProcessSignalRequest"/>);
    /// opens a session that ends with <see cref="Exited"/> once delivered, or <see cref="ExecFailed"/>.
    /// </summary>
    SignalProcess = 0x1A,

    /// <summary>Stop the guest gracefully (JSON <see cref="ShutdownRequest"/>), on session 0.</summary>
    Shutdown = 0x20,

    /// <summary>
    /// The setup of a sandbox booted with <see cref="RuntimeSpec.HoldUntilReleased"/> is done: the
    /// runtime reports it Running (no payload), on session 0 from a client.
    /// </summary>
    Release = 0x21,

    /// <summary>A file operation in the guest; opens the session (JSON <see cref="FileRequest"/>).</summary>
    FileRequest = 0x30,

    /// <summary>Raw bytes of a file being read or written; an empty payload from the host ends a write.</summary>
    FileData = 0x31,

    /// <summary>Entries of a listing, or of the file a read will send (JSON <see cref="FileEntries"/>).</summary>
    FileEntries = 0x32,

    /// <summary>The operation succeeded; the last frame of its session (JSON <see cref="FileResult"/>).</summary>
    FileResult = 0x33,
}

/// <summary>Facts about frame types that both peers rely on.</summary>
public static class FrameTypes
{
    /// <summary>Whether <paramref name="type"/> is a type this version of the protocol knows.</summary>
    public static bool IsKnown(FrameType type) => type switch
    {
        FrameType.Hello or FrameType.HelloAck or FrameType.Ping or FrameType.Pong or FrameType.Error
            or FrameType.ExecRequest or FrameType.ExecStarted or FrameType.Stdout or FrameType.Stderr
            or FrameType.Stdin or FrameType.Exited or FrameType.ExecFailed or FrameType.Signal
            or FrameType.Window or FrameType.Resize or FrameType.SignalProcess or FrameType.Shutdown => true,
        FrameType.Release => true,
        FrameType.FileRequest or FrameType.FileData or FrameType.FileEntries or FrameType.FileResult => true,
        _ => false,
    };

    /// <summary>Whether a frame of this type is the last one of its session.</summary>
    public static bool EndsSession(FrameType type) =>
        type is FrameType.Exited or FrameType.ExecFailed or FrameType.Error
            or FrameType.FileResult;
}
