namespace Microsandbox.Engine;

/// <summary>What kind of failure a <see cref="SandboxException"/> is, independent of PowerShell.</summary>
public enum SandboxErrorKind
{
    /// <summary>A value the caller gave is not acceptable.</summary>
    InvalidArgument,

    /// <summary>The thing named does not exist.</summary>
    NotFound,

    /// <summary>The thing already exists.</summary>
    AlreadyExists,

    /// <summary>The operation does not fit the current state (for example exec in a stopped sandbox).</summary>
    InvalidOperation,

    /// <summary>A host prerequisite is missing.</summary>
    NotInstalled,

    /// <summary>A deadline passed.</summary>
    Timeout,

    /// <summary>The guest, the VMM or the runtime failed.</summary>
    DeviceError,

    /// <summary>A file or the state store could not be read or written.</summary>
    ResourceUnavailable,

    /// <summary>An operation ran but its outcome is a failure (a command's non-zero exit).</summary>
    InvalidResult,

    /// <summary>A file the caller named holds something other than it must (a disk image that is not one).</summary>
    InvalidData,
}

/// <summary>
/// A failure with a stable identifier that scripts and tests can rely on, and the object it is
/// about (a sandbox name, a path) as its target.
/// </summary>
public sealed class SandboxException : Exception
{
    /// <summary>Creates the exception.</summary>
    public SandboxException(
        string errorId, SandboxErrorKind kind, string message, object? target = null, Exception? inner = null)
        : base(message, inner)
    {
        ErrorId = errorId;
        Kind = kind;
        Target = target;
    }

    /// <summary>Creates an exception with no identifier; prefer the full constructor.</summary>
    public SandboxException()
        : this("SandboxError", SandboxErrorKind.DeviceError, "A sandbox operation failed.")
    {
    }

    /// <summary>Creates an exception with a message only; prefer the full constructor.</summary>
    public SandboxException(string message)
        : this("SandboxError", SandboxErrorKind.DeviceError, message)
    {
    }

    /// <summary>Creates an exception with a message and cause; prefer the full constructor.</summary>
    public SandboxException(string message, Exception innerException)
        : this("SandboxError", SandboxErrorKind.DeviceError, message, null, innerException)
    {
    }

    /// <summary>Stable PascalCase identifier of the failure, for example <c>SandboxAlreadyExists</c>.</summary>
    public string ErrorId { get; }

    /// <summary>The kind of failure.</summary>
    public SandboxErrorKind Kind { get; }

    /// <summary>What the failure is about: a sandbox name, an image, a path.</summary>
    public object? Target { get; }

    /// <summary>Supporting text, such as the tail of the guest console.</summary>
    public string? Detail { get; init; }

    /// <summary>How to fix it, when there is an obvious fix.</summary>
    public string? Hint { get; init; }
}
