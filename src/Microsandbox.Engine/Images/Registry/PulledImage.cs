using Microsandbox.Engine.Images.Cache;

namespace Microsandbox.Engine.Images.Registry;

/// <summary>Progress of one layer's download, as bytes held of bytes in all.</summary>
/// <param name="Digest">The layer's digest, which identifies it across reports.</param>
/// <param name="BytesDone">Bytes held, counting those resumed from an earlier attempt.</param>
/// <param name="BytesTotal">The layer's size.</param>
public sealed record LayerProgress(string Digest, long BytesDone, long BytesTotal);

/// <summary>A manifest document as the registry sent it, with its verified digest.</summary>
public sealed record ManifestDocument
{
    /// <summary>The exact bytes, which the digest covers.</summary>
    public required ReadOnlyMemory<byte> Content { get; init; }

    /// <summary>The document's media type (declared, sent, or inferred from its shape).</summary>
    public required string MediaType { get; init; }

    /// <summary>The digest of <see cref="Content"/>.</summary>
    public required string Digest { get; init; }

    /// <summary>Whether this is an index of per-platform manifests.</summary>
    public bool IsIndex => ImageMediaTypes.IsIndex(MediaType);
}

/// <summary>An image reference resolved to the one manifest for a platform.</summary>
public sealed record ResolvedImage
{
    /// <summary>The reference that was resolved.</summary>
    public required ImageReference Reference { get; init; }

    /// <summary>The platform the manifest is for.</summary>
    public required ImagePlatform Platform { get; init; }

    /// <summary>The index the manifest was chosen from, when the reference named an index.</summary>
    public ManifestDocument? Index { get; init; }

    /// <summary>The platform's image manifest document.</summary>
    public required ManifestDocument ManifestDocument { get; init; }

    /// <summary>The parsed manifest.</summary>
    public required ImageManifest Manifest { get; init; }
}

/// <summary>
/// An image whose manifest, config and layers are all in the layer cache: what a sandbox is made
/// from. Produced by a pull, or loaded from the cache without the registry.
/// </summary>
public sealed record PulledImage
{
    /// <summary>The reference it was pulled by.</summary>
    public required ImageReference Reference { get; init; }

    /// <summary>The platform's manifest digest: the image's identity.</summary>
    public required string ManifestDigest { get; init; }

    /// <summary>The digest of the index the manifest came from, if any.</summary>
    public string? IndexDigest { get; init; }

    /// <summary>The platform the image is for.</summary>
    public required ImagePlatform Platform { get; init; }

    /// <summary>The manifest: config and layers.</summary>
    public required ImageManifest Manifest { get; init; }

    /// <summary>The image config.</summary>
    public required ImageConfig Config { get; init; }

    /// <summary>The layers' total compressed size.</summary>
    public long Size => Manifest.Layers.Sum(layer => layer.Size);

    /// <summary>
    /// Records in the cache that <see cref="Reference"/> names this image, pulled now, replacing an
    /// earlier record; the image's blobs must all be cached.
    /// </summary>
    public Task RecordAsync(LayerCache cache, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(cache);
        return cache.SetReferenceAsync(new CachedReference
        {
            Reference = Reference.ToString(),
            ManifestDigest = ManifestDigest,
            IndexDigest = IndexDigest,
            Platform = Platform.ToString(),
            PulledAt = DateTimeOffset.UtcNow,
        }, cancellationToken);
    }

    /// <summary>
    /// The image a reference was last pulled as, read from the cache alone; null when the reference
    /// was never pulled into it or a blob it needs has since gone.
    /// </summary>
    public static async Task<PulledImage?> LoadAsync(
        LayerCache cache, ImageReference reference, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(cache);
        ArgumentNullException.ThrowIfNull(reference);
        CachedReference? entry = cache.FindReference(reference.ToString());
        if (entry is null || !cache.Contains(entry.ManifestDigest))
        {
            return null;
        }

        string target = reference.ToString();
        byte[] manifestJson = await cache.ReadBlobAsync(entry.ManifestDigest, cancellationToken)
            .ConfigureAwait(false);
        ImageManifest manifest = ImageManifest.Parse(manifestJson, target);
        if (!cache.Contains(manifest.Config.Digest)
            || manifest.Layers.Any(layer => !cache.Contains(layer.Digest)))
        {
            return null;
        }

        byte[] configJson = await cache.ReadBlobAsync(manifest.Config.Digest, cancellationToken)
            .ConfigureAwait(false);
        return new PulledImage
        {
            Reference = reference,
            ManifestDigest = entry.ManifestDigest,
            IndexDigest = entry.IndexDigest,
            Platform = ImagePlatform.Parse(entry.Platform),
            Manifest = manifest,
            Config = ImageConfig.Parse(configJson, target),
        };
    }
}
