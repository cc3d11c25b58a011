namespace Microsandbox.Engine.Images.Cache;

/// <summary>
/// What an image reference resolved to when it was last pulled: the cache's answer to "do I have
/// <c>python:latest</c>" without asking the registry.
/// </summary>
public sealed record CachedReference
{
    /// <summary>The canonical reference, for example <c>docker.io/library/python:latest</c>.</summary>
    public required string Reference { get; init; }

    /// <summary>The digest of the platform's image manifest, whose blobs are all in the cache.</summary>
    public required string ManifestDigest { get; init; }

    /// <summary>The digest of the index the manifest was chosen from, when the reference named one.</summary>
    public string? IndexDigest { get; init; }

    /// <summary>The platform the manifest was chosen for, such as <c>linux/amd64</c>.</summary>
    public required string Platform { get; init; }

    /// <summary>When the pull finished.</summary>
    public required DateTimeOffset PulledAt { get; init; }
}
