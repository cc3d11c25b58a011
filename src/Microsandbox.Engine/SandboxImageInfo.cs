namespace Microsandbox.Engine;

/// <summary>An image in the layer cache, as Get-SandboxImage shows it.</summary>
public sealed class SandboxImageInfo
{
    internal SandboxImageInfo(
        string reference,
        string digest,
        string platform,
        long sizeBytes,
        int layers,
        DateTimeOffset? created,
        DateTimeOffset pulledAt,
        string? basePath,
        long? baseSizeBytes)
    {
        Reference = reference;
        Digest = digest;
        Platform = platform;
        SizeBytes = sizeBytes;
        Layers = layers;
        Created = created;
        PulledAt = pulledAt;
        BasePath = basePath;
        BaseSizeBytes = baseSizeBytes;
    }

    /// <summary>The canonical reference, for example <c>docker.io/library/python:latest</c>.</summary>
    public string Reference { get; }

    /// <summary>The digest of the platform's image manifest: the image's identity.</summary>
    public string Digest { get; }

    /// <summary>The platform the manifest was chosen for, such as <c>linux/amd64</c>.</summary>
    public string Platform { get; }

    /// <summary>The layers' total size as stored (compressed), in bytes.</summary>
    public long SizeBytes { get; }

    /// <summary>The number of layers.</summary>
    public int Layers { get; }

    /// <summary>When the image was built, as its config says; null when it does not say.</summary>
    public DateTimeOffset? Created { get; }

    /// <summary>When the image was last pulled into this cache.</summary>
    public DateTimeOffset PulledAt { get; }

    /// <summary>The EROFS base that sandboxes of this image share; null until one is built.</summary>
    public string? BasePath { get; }

    /// <summary>The size of the EROFS base in bytes; null when there is none.</summary>
    public long? BaseSizeBytes { get; }
}
