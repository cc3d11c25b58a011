namespace Microsandbox.Engine;

/// <summary>How much a message matters to the user.</summary>
public enum SandboxMessageLevel
{
    /// <summary>Internals, for debugging.</summary>
    Debug,

    /// <summary>A step the user may want to follow.</summary>
    Verbose,

    /// <summary>Something the user should know, such as emulation being used.</summary>
    Warning,
}

/// <summary>A progress message from a long engine operation.</summary>
/// <param name="Level">How much it matters.</param>
/// <param name="Text">What happened.</param>
public sealed record SandboxMessage(SandboxMessageLevel Level, string Text);
