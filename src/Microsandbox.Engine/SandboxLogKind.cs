namespace Microsandbox.Engine;

/// <summary>Which of a sandbox's logs to read.</summary>
public enum SandboxLogKind
{
    /// <summary>The guest console of the current or last boot: the kernel's messages and the agent's.</summary>
    Console,

    /// <summary>The sandbox runtime's own log over every start: boots, stops, limits and failures.</summary>
    Runtime,

    /// <summary>One line per command started and ended, with its exit code and duration, over every start.</summary>
    Command,
}
