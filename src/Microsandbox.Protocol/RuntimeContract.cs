using System.Text.Json;
using System.Text.Json.Serialization;

namespace Microsandbox.Protocol;

/// <summary>
/// What the engine hands a sandbox runtime process: a fully resolved VMM command line and the
/// paths it owns. The runtime makes no decisions the engine could make for it.
/// </summary>
public sealed class RuntimeSpec
{
    /// <summary>The sandbox's name, for logs.</summary>
    public string SandboxName { get; init; } = "";

    /// <summary>The VMM executable.</summary>
    public string VmmPath { get; init; } = "";

    /// <summary>The VMM's arguments.</summary>
    public IReadOnlyList<string> VmmArguments { get; init => field = value ?? []; } = [];

    /// <summary>The Unix socket the VMM serves the agent port on.</summary>
    public string AgentSocketPath { get; init; } = "";

    /// <summary>The Unix socket the runtime listens on for engine clients.</summary>
    public string ControlSocketPath { get; init; } = "";

    /// <summary>The file the VMM writes the guest console to.</summary>
    public string ConsoleLogPath { get; init; } = "";

    /// <summary>The file the runtime keeps its <see cref="RuntimeStatus"/> in.</summary>
    public string StatusPath { get; init; } = "";

    /// <summary>
    /// How long the guest may take to become ready before the boot fails; absent, 0 or less means
    /// 60 s (the source generator passes 0 for an absent field, so the accessor restores the default).
    /// </summary>
    public int BootTimeoutMilliseconds { get; init => field = value > 0 ? value : 60_000; } = 60_000;

    /// <summary>The accelerator the VMM arguments select (kvm, tcg...), recorded in the status.</summary>
    public string Accelerator { get; init; } = "";

    /// <summary>
    /// How long the sandbox may run from the moment it is ready before the runtime stops it
    /// gracefully; 0 (the default) is no limit.
    /// </summary>
    public long MaxDurationMilliseconds { get; init; }

    /// <summary>
    /// How long the sandbox may go with no client connected and no command or file session open
    /// before the runtime stops it gracefully; 0 (the default) is no limit.
    /// </summary>
    public long IdleTimeoutMilliseconds { get; init; }

    /// <summary>
    /// A host process the sandbox is tied to: when it ends, the runtime stops the sandbox
    /// gracefully. Absent for a detached sandbox.
    /// </summary>
    public int? AttachedProcessId { get; init; }

    /// <summary>
    /// The start time of <see cref="AttachedProcessId"/> in clock ticks since boot (field 22 of
    /// <c>/proc/PID/stat</c>), so a reused process id is never taken for the process it was.
    /// </summary>
    public long? AttachedProcessStartTicks { get; init; }

    /// <summary>The file the runtime appends one line to per command started and ended; empty, none.</summary>
    public string CommandLogPath { get; init; } = "";

    /// <summary>
    /// Whether the runtime keeps reporting the sandbox Starting once the agent is ready, until a
    /// client sends <see cref="FrameType.Release"/>: the creating engine puts the sandbox's scripts
    /// and patches in place in between, before anybody else is handed the sandbox. Its limits
    /// count from the release.
    /// </summary>
    public bool HoldUntilReleased { get; init; }
}

/// <summary>The runtime's own account of the sandbox, rewritten atomically on every change.</summary>
public sealed class RuntimeStatus
{
    /// <summary>Starting, Running, Stopping, Stopped, Crashed or Failed (never became ready).</summary>
    public string State { get; init; } = "";

    /// <summary>The runtime's process id.</summary>
    public int RuntimePid { get; init; }

    /// <summary>The VMM's process id, once started.</summary>
    public int? VmmPid { get; init; }

    /// <summary>The accelerator in use.</summary>
    public string? Accelerator { get; init; }

    /// <summary>When the runtime started.</summary>
    public DateTimeOffset StartedAt { get; init; }

    /// <summary>Milliseconds from the VMM's start to the agent's hello.</summary>
    public long? BootMilliseconds { get; init; }

    /// <summary>When the sandbox stopped, crashed or failed.</summary>
    public DateTimeOffset? EndedAt { get; init; }

    /// <summary>Stable id of a failure (GuestNotReady, GuestBootFailed, VmmExited...).</summary>
    public string? ErrorCode { get; init; }

    /// <summary>Why the sandbox ended, in words.</summary>
    public string? Reason { get; init; }

    /// <summary>The last lines of the guest console when the sandbox failed or crashed.</summary>
    public string? ConsoleTail { get; init; }

    /// <summary>Reads a status file; null when it does not exist or is unreadable.</summary>
    public static RuntimeStatus? Load(string path)
    {
        try
        {
            return JsonSerializer.Deserialize(File.ReadAllBytes(path), RuntimeJsonContext.Default.RuntimeStatus);
        }
        catch (Exception ex) when (ex is IOException or JsonException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Writes a status file through a rename, so readers never see half of one.</summary>
    public void Save(string path)
    {
        string temp = path + ".tmp";
        File.WriteAllBytes(temp, JsonSerializer.SerializeToUtf8Bytes(this, RuntimeJsonContext.Default.RuntimeStatus));
        File.Move(temp, path, overwrite: true);
    }
}

/// <summary>Reads and writes <see cref="RuntimeSpec"/> files.</summary>
public static class RuntimeSpecFile
{
    /// <summary>Reads a spec file.</summary>
    public static RuntimeSpec Load(string path) =>
        JsonSerializer.Deserialize(File.ReadAllBytes(path), RuntimeJsonContext.Default.RuntimeSpec)
            ?? throw new InvalidDataException($"{path} holds no runtime spec.");

    /// <summary>Writes a spec file.</summary>
    public static void Save(RuntimeSpec spec, string path) =>
        File.WriteAllBytes(path, JsonSerializer.SerializeToUtf8Bytes(spec, RuntimeJsonContext.Default.RuntimeSpec));
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    WriteIndented = true)]
[JsonSerializable(typeof(RuntimeSpec))]
[JsonSerializable(typeof(RuntimeStatus))]
internal sealed partial class RuntimeJsonContext : JsonSerializerContext;
