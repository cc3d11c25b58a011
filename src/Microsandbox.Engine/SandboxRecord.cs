namespace Microsandbox.Engine;

/// <summary>One row of the sandboxes table with its labels.</summary>
internal sealed class SandboxRecord
{
    public required string Id { get; init; }

    public required string Name { get; init; }

    public required string Image { get; init; }

    /// <summary>
    /// The EROFS base the sandbox was created on (a moved tag does not move it), the host folder,
    /// or the disk image it was created from.
    /// </summary>
    public string? BasePath { get; set; }

    /// <summary>How the sandbox's own root disk is stored, when a disk image is its root; else null.</summary>
    public DiskImageFormat? RootFormat { get; init; }

    /// <summary>The partition of the root disk that holds the root; null for the whole disk.</summary>
    public int? RootPartition { get; init; }

    public int Cpus { get; init; }

    public int MemoryMB { get; init; }

    public required string Shell { get; init; }

    public required string WorkingDirectory { get; init; }

    /// <summary>The user commands run as by default; null is root.</summary>
    public string? User { get; init; }

    /// <summary>The image config's Entrypoint, for commands that run the image's own command.</summary>
    public IReadOnlyList<string> Entrypoint { get; init; } = [];

    /// <summary>The image config's Cmd: the default arguments after the entrypoint.</summary>
    public IReadOnlyList<string> Cmd { get; init; } = [];

    public required IReadOnlyDictionary<string, string> Environment { get; init; }

    public required IReadOnlyDictionary<string, string> Labels { get; init; }

    public DateTimeOffset CreatedAt { get; init; }

    public int? BootTimeoutMilliseconds { get; init; }

    public long? MaxDurationMilliseconds { get; init; }

    public long? IdleTimeoutMilliseconds { get; init; }

    /// <summary>The host process the running sandbox is tied to; null when detached or not running.</summary>
    public int? AttachedPid { get; set; }

    public required string Directory { get; init; }

    public SandboxState State { get; set; }

    public DateTimeOffset? StartedAt { get; set; }

    public int? RuntimePid { get; set; }

    public string? Accelerator { get; set; }

    public string? Reason { get; set; }

    /// <summary>Takes the state of <paramref name="other"/>, the same sandbox as read later.</summary>
    public void TakeStateFrom(SandboxRecord other)
    {
        State = other.State;
        StartedAt = other.StartedAt;
        RuntimePid = other.RuntimePid;
        Accelerator = other.Accelerator;
        Reason = other.Reason;
        BasePath = other.BasePath;
        AttachedPid = other.AttachedPid;
    }
}
