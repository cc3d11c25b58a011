namespace Microsandbox.Engine;

/// <summary>A sandbox as the state store and its runtime describe it.</summary>
public sealed class Sandbox
{
    internal Sandbox(SandboxRecord record, SandboxState state, string? reason, int? runtimePid, string? accelerator)
    {
        Id = record.Id;
        Name = record.Name;
        State = state;
        Image = record.Image;
        Cpus = record.Cpus;
        MemoryMB = record.MemoryMB;
        Labels = record.Labels;
        Environment = record.Environment;
        WorkingDirectory = record.WorkingDirectory;
        Shell = record.Shell;
        User = record.User;
        Entrypoint = record.Entrypoint;
        Cmd = record.Cmd;
        CreatedAt = record.CreatedAt;
        StartedAt = record.StartedAt;
        Reason = reason;
        RuntimePid = runtimePid;
        Accelerator = accelerator;
        MaxDuration = record.MaxDurationMilliseconds is long max ? TimeSpan.FromMilliseconds(max) : null;
        IdleTimeout = record.IdleTimeoutMilliseconds is long idle ? TimeSpan.FromMilliseconds(idle) : null;
        AttachedProcessId = record.AttachedPid;
        Host = System.Environment.MachineName;
        Directory = record.Directory;
    }

    /// <summary>Stable identifier, also the name of the sandbox's folder.</summary>
    public string Id { get; }

    /// <summary>Unique name.</summary>
    public string Name { get; }

    /// <summary>Current state, checked against the runtime process.</summary>
    public SandboxState State { get; }

    /// <summary>The image the root filesystem comes from.</summary>
    public string Image { get; }

    /// <summary>Virtual CPUs.</summary>
    public int Cpus { get; }

    /// <summary>Guest memory in MiB.</summary>
    public int MemoryMB { get; }

    /// <summary>Labels, fixed for the sandbox's life.</summary>
    public IReadOnlyDictionary<string, string> Labels { get; }

    /// <summary>Environment every command gets.</summary>
    public IReadOnlyDictionary<string, string> Environment { get; }

    /// <summary>Default working directory of commands.</summary>
    public string WorkingDirectory { get; }

    /// <summary>Shell that runs command strings.</summary>
    public string Shell { get; }

    /// <summary>The user commands run as unless they name another; null is root.</summary>
    public string? User { get; }

    /// <summary>The image's entrypoint (from its config), run by commands that use the image's command.</summary>
    public IReadOnlyList<string> Entrypoint { get; }

    /// <summary>The image's default arguments (its config's Cmd), replaced by a command's own.</summary>
    public IReadOnlyList<string> Cmd { get; }

    /// <summary>When the sandbox was created.</summary>
    public DateTimeOffset CreatedAt { get; }

    /// <summary>When it last started, if ever.</summary>
    public DateTimeOffset? StartedAt { get; }

    /// <summary>Why it stopped or crashed, when known.</summary>
    public string? Reason { get; }

    /// <summary>Process id of the sandbox runtime while it runs.</summary>
    public int? RuntimePid { get; }

    /// <summary>How long the sandbox may run per start before it is stopped; null is no limit.</summary>
    public TimeSpan? MaxDuration { get; }

    /// <summary>How long the sandbox may sit idle before it is stopped; null is no limit.</summary>
    public TimeSpan? IdleTimeout { get; }

    /// <summary>The host process the running sandbox is tied to (its creating pwsh); null when detached.</summary>
    public int? AttachedProcessId { get; }

    /// <summary>Whether the sandbox stops when the process that created it exits.</summary>
    public bool Attached => AttachedProcessId is not null;

    /// <summary>How long ago the sandbox was created.</summary>
    public TimeSpan Age => DateTimeOffset.UtcNow - CreatedAt;

    /// <summary>The accelerator the VM runs on (kvm, tcg).</summary>
    public string? Accelerator { get; }

    /// <summary>The machine the sandbox lives on.</summary>
    public string Host { get; }

    /// <summary>The sandbox's folder under the home.</summary>
    public string Directory { get; }

    /// <inheritdoc/>
    public override string ToString() => Name;
}
