using System.Text.Json.Serialization;

namespace Microsandbox.Protocol;

/// <summary>Opens a connection: the versions the sender speaks and what it can do.</summary>
public sealed class HelloMessage
{
    /// <summary>Protocol versions the sender speaks, oldest first.</summary>
    public IReadOnlyList<int> Versions { get; init => field = value ?? []; } = [];

    /// <summary>Optional features, named (for example <c>exec</c>, <c>signal</c>).</summary>
    public IReadOnlyList<string> Capabilities { get; init => field = value ?? []; } = [];

    /// <summary>Who is speaking, for logs (for example <c>msb-agent 0.1.0</c>).</summary>
    public string? Peer { get; init; }

    /// <summary>Guest kernel release, when the sender is or relays the agent.</summary>
    public string? KernelRelease { get; init; }
}

/// <summary>Accepts a <see cref="HelloMessage"/> with the version both sides will use.</summary>
public sealed class HelloAckMessage
{
    /// <summary>The chosen version: the highest both peers speak.</summary>
    public int Version { get; init; }

    /// <summary>Who is answering, for logs.</summary>
    public string? Peer { get; init; }
}

/// <summary>A failure: of a session when sent on one, of the connection when sent on session 0.</summary>
public sealed class ErrorMessage
{
    /// <summary>Stable identifier of the failure (for example <c>CommandNotFound</c>).</summary>
    public string Code { get; init => field = value ?? ""; } = "";

    /// <summary>Human-readable explanation.</summary>
    public string Message { get; init => field = value ?? ""; } = "";

    /// <summary>Supporting text, such as the tail of the guest console.</summary>
    public string? Detail { get; init; }
}

/// <summary>Asks the agent to start a process.</summary>
public sealed class ExecRequest
{
    /// <summary>Program and arguments; the program is looked up on <c>PATH</c> when it has no slash.</summary>
    public IReadOnlyList<string> Argv { get; init => field = value ?? []; } = [];

    /// <summary>Environment variables added to (and overriding) the guest's defaults.</summary>
    public IReadOnlyDictionary<string, string> Environment
    {
        get;
        init => field = value ?? new Dictionary<string, string>();
    } = new Dictionary<string, string>();

    /// <summary>Working directory; must exist. Null means <c>/</c>.</summary>
    public string? WorkingDirectory { get; init; }

    /// <summary>
    /// The user to run as, as an OCI image config names one: <c>name</c>, <c>uid</c>, or either with
    /// <c>:group</c>, resolved against the guest's <c>/etc/passwd</c> and <c>/etc/group</c>. Null
    /// means root.
    /// </summary>
    public string? User { get; init; }

    /// <summary>Whether the host will send <see cref="FrameType.Stdin"/>; if not, stdin is empty.</summary>
    public bool Stdin { get; init; }

    /// <summary>
    /// Whether the session is flow-controlled: each side may have at most
    /// <see cref="FlowWindow.InitialBytes"/> of data unacknowledged, and sends more only as the
    /// other grants it with <see cref="FrameType.Window"/>. Asked only of an agent that advertises
    /// the <c>window</c> capability.
    /// </summary>
    public bool FlowControl { get; init; }

    /// <summary>
    /// Run the command on a pseudo-terminal of this size instead of pipes: it becomes the session
    /// leader with the terminal as its controlling terminal, its output (stdout and stderr alike)
    /// arrives as <see cref="FrameType.Stdout"/>, and <see cref="FrameType.Resize"/> changes the
    /// size. Null runs it on pipes. Asked only of an agent with the <c>tty</c> capability.
    /// </summary>
    public TerminalSize? Terminal { get; init; }
}

/// <summary>The process is running.</summary>
public sealed class ExecStarted
{
    /// <summary>Its process id in the guest.</summary>
    public int Pid { get; init; }
}

/// <summary>The process ended.</summary>
public sealed class ExecExited
{
    /// <summary>Exit code; 128 + signal number when a signal ended it, as shells report.</summary>
    public int ExitCode { get; init; }

    /// <summary>The signal that ended it, if any.</summary>
    public int? Signal { get; init; }
}

/// <summary>Delivers a signal to a session's process.</summary>
public sealed class SignalRequest
{
    /// <summary>Linux signal number (for example 15 for SIGTERM, 9 for SIGKILL).</summary>
    public int Signal { get; init; }

    /// <summary>Whether the process's descendants get the signal too (a shell's children, say).</summary>
    public bool ProcessTree { get; init; }
}

/// <summary>Asks the agent to signal a guest process by its id, whichever session started it.</summary>
public sealed class ProcessSignalRequest
{
    /// <summary>The process id in the guest.</summary>
    public int Pid { get; init; }

    /// <summary>Linux signal number.</summary>
    public int Signal { get; init; }

    /// <summary>Whether every descendant of the process gets the signal too.</summary>
    public bool ProcessTree { get; init; }
}

/// <summary>The size of a terminal, in character cells.</summary>
public sealed class TerminalSize
{
    /// <summary>Lines; positive.</summary>
    public int Rows { get; init; }

    /// <summary>Columns; positive.</summary>
    public int Columns { get; init; }
}

/// <summary>Credit for more data on a flow-controlled session.</summary>
public sealed class WindowUpdate
{
    /// <summary>How many more payload bytes the other side may send; positive.</summary>
    public int Bytes { get; init; }
}

/// <summary>Asks the guest (or the runtime, for a whole sandbox) to stop.</summary>
public sealed class ShutdownRequest
{
    /// <summary>How long a graceful stop may take before the VM is killed; 0 kills at once.</summary>
    public int TimeoutMilliseconds { get; init; }

    /// <summary>Why, for the logs and the recorded stop reason.</summary>
    public string? Reason { get; init; }
}

// The .NET 8 source generator sets every init-only property when it builds a message, passing
// null (or 0) for fields the JSON omits, so initializers alone do not give defaults: the init
// accessors above turn a missing or explicit null into the documented empty value.
/// <summary>System.Text.Json source generation, so both the host and the NativeAOT agent avoid reflection.</summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(HelloMessage))]
[JsonSerializable(typeof(HelloAckMessage))]
[JsonSerializable(typeof(ErrorMessage))]
[JsonSerializable(typeof(ExecRequest))]
[JsonSerializable(typeof(ExecStarted))]
[JsonSerializable(typeof(ExecExited))]
[JsonSerializable(typeof(SignalRequest))]
[JsonSerializable(typeof(ShutdownRequest))]
[JsonSerializable(typeof(WindowUpdate))]
[JsonSerializable(typeof(TerminalSize))]
[JsonSerializable(typeof(ProcessSignalRequest))]
[JsonSerializable(typeof(Dictionary<string, string>))]
internal sealed partial class ProtocolJsonContext : JsonSerializerContext;
