namespace Microsandbox.Engine;

/// <summary>Where a sandbox is in its life.</summary>
public enum SandboxState
{
    /// <summary>Recorded, never started.</summary>
    Created,

    /// <summary>The runtime is booting the VM.</summary>
    Starting,

    /// <summary>The agent is serving.</summary>
    Running,

    /// <summary>A graceful stop is under way.</summary>
    Stopping,

    /// <summary>Not running; can be started again.</summary>
    Stopped,

    /// <summary>The runtime, the VMM or the guest died unasked; the reason is recorded.</summary>
    Crashed,
}
