using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// What the argument completers complete from: the sandboxes and cached images of the current
/// home, or nothing when the home cannot be read, since a completer has no way to report why.
/// </summary>
internal static class CompletionSource
{
    /// <summary>The sandboxes of the current home.</summary>
    public static IReadOnlyList<Sandbox> Sandboxes() => Read(engine => engine.List());

    /// <summary>The images in the layer cache of the current home.</summary>
    public static IReadOnlyList<SandboxImageInfo> Images() => Read(engine => engine.Images.List());

    private static IReadOnlyList<T> Read<T>(Func<SandboxEngine, IReadOnlyList<T>> list)
    {
        try
        {
            return list(new SandboxEngine(SandboxHome.FromEnvironment()));
        }
        catch (Exception ex) when (ex is SandboxException or IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }
}
