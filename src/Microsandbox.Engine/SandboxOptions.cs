namespace Microsandbox.Engine;

/// <summary>
/// Everything that defines a new sandbox. A plain object model, so a declarative file can map
/// onto it one to one.
/// </summary>
public sealed class SandboxOptions
{
    /// <summary>The built-in image: a BusyBox root that needs no network.</summary>
    public const string DefaultImage = "default";

    /// <summary>Unique name: not empty, at most 128 UTF-8 bytes.</summary>
    public string? Name { get; set; }

    /// <summary>Image reference; null or <see cref="DefaultImage"/> for the built-in image.</summary>
    public string? Image { get; set; }

    /// <summary>Virtual CPUs (default 1).</summary>
    public int Cpus { get; set; } = 1;

    /// <summary>Guest memory in MiB (default 512).</summary>
    public int MemoryMB { get; set; } = 512;

    /// <summary>Environment every command gets.</summary>
    public IDictionary<string, string> Environment { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>Labels; keys may not use a reserved prefix. An empty value is a valueless label.</summary>
    public IDictionary<string, string> Labels { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>Default working directory of commands; null takes the image's, else <c>/</c>.</summary>
    public string? WorkingDirectory { get; set; }

    /// <summary>
    /// The user commands run as unless they name one (<c>name</c>, <c>uid</c>, <c>name:group</c>);
    /// null takes the image config's <c>User</c>, and root when the image names none.
    /// </summary>
    public string? User { get; set; }

    /// <summary>
    /// Named scripts placed at <c>/.msb/scripts/&lt;name&gt;</c> (mode 0755) before New-Sandbox returns,
    /// with that folder at the end of every command's PATH. A script without a <c>#!</c> line is given
    /// <c>#!/bin/sh</c>.
    /// </summary>
    public IDictionary<string, string> Scripts { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>Changes to the root, applied in order before New-Sandbox returns.</summary>
    public IList<SandboxPatch> Patches { get; } = new List<SandboxPatch>();

    /// <summary>Shell that runs command strings (default <c>/bin/sh</c>).</summary>
    public string Shell { get; set; } = "/bin/sh";

    /// <summary>Replace a sandbox of the same name instead of failing.</summary>
    public bool Replace { get; set; }

    /// <summary>How long the replaced sandbox may take to stop gracefully; zero kills it at once.</summary>
    public TimeSpan ReplaceTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>When to pull the image from its registry (default: only when it is not cached).</summary>
    public PullPolicy PullPolicy { get; set; } = PullPolicy.IfMissing;

    /// <summary>How long the guest may take to become ready; null picks a default for the accelerator.</summary>
    public TimeSpan? BootTimeout { get; set; }

    /// <summary>
    /// How long the sandbox may run, from the moment it is ready, before its runtime stops it
    /// gracefully; null is no limit. Kept for the sandbox's life: every start gets the same limit.
    /// </summary>
    public TimeSpan? MaxDuration { get; set; }

    /// <summary>
    /// How long the sandbox may go with no command, file transfer or client before its runtime stops
    /// it gracefully; null is no limit. Kept for the sandbox's life.
    /// </summary>
    public TimeSpan? IdleTimeout { get; set; }

    /// <summary>
    /// A host process to tie the new sandbox to: when that process exits or is killed, the sandbox's
    /// runtime stops it gracefully. Null (the default) leaves the sandbox detached, outliving its
    /// creator. Applies to this first run; a later start is detached unless it attaches again.
    /// </summary>
    public int? AttachedProcessId { get; set; }

    /// <summary>
    /// Creates the sandbox without booting it: it is recorded with its root disks and stays
    /// <see cref="SandboxState.Created"/> until it is started. Its scripts and patches are kept in
    /// its folder and put in place on that first start, before anything else runs. Cannot be
    /// combined with <see cref="AttachedProcessId"/>, which ties a run to a process.
    /// </summary>
    public bool NoStart { get; set; }
}
