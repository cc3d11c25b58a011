using Microsandbox.Engine.Images.Cache;
using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.Engine.Images.Layout;

/// <summary>
/// One image found in an export, checked and chosen but not yet stored: the names to record it
/// under, its manifest (as the export holds it, or made for a docker save archive), config and
/// the export's file for each layer.
/// </summary>
internal sealed record ArchiveImage
{
    /// <summary>Manifests and indexes larger than this are no image's, as the registry client says.</summary>
    public const long MaxManifestBytes = 4 << 20;

    /// <summary>The largest config read into memory.</summary>
    public const long MaxConfigBytes = 32 << 20;

    /// <summary>The canonical references to record; at least one.</summary>
    public required IReadOnlyList<string> Names { get; init; }

    /// <summary>The platform the manifest was chosen for.</summary>
    public required ImagePlatform Platform { get; init; }

    /// <summary>The image manifest.</summary>
    public required ImageManifest Manifest { get; init; }

    /// <summary>The manifest's exact bytes, which its digest covers.</summary>
    public required byte[] ManifestJson { get; init; }

    /// <summary>The manifest's digest: the image's identity.</summary>
    public string ManifestDigest => ContentDigest.Of(ManifestJson);

    /// <summary>The index blob the manifest was chosen from, when there was one.</summary>
    public byte[]? IndexJson { get; init; }

    /// <summary>The config's exact bytes.</summary>
    public required byte[] ConfigJson { get; init; }

    /// <summary>The export's file for each layer digest.</summary>
    public required IReadOnlyDictionary<string, string> LayerFiles { get; init; }

    /// <summary>The file of a blob in an OCI layout (and in a docker save archive from Docker 25 on).</summary>
    public static string BlobFile(string digest) => "blobs/sha256/" + ContentDigest.Hex(digest);

    /// <summary>
    /// Reads a small blob whole and checks it against its descriptor: missing is
    /// <c>ImageLayoutInvalid</c>, another size or digest <c>BlobDigestMismatch</c>.
    /// </summary>
    public static byte[] ReadBlob(ImageArchive archive, OciDescriptor descriptor, long limit)
    {
        string name = BlobFile(descriptor.Digest);
        CheckSize(archive, descriptor.Digest, name, descriptor.Size);
        byte[] content = archive.ReadAll(name, limit);
        string actual = ContentDigest.Of(content);
        if (actual != descriptor.Digest)
        {
            throw LayoutErrors.Mismatch(archive.Path, descriptor.Digest, $"has the digest {actual}");
        }

        return content;
    }

    /// <summary>
    /// Checks that the export holds <paramref name="name"/> at <paramref name="size"/> bytes, so a
    /// truncated blob is refused before anything is written.
    /// </summary>
    public static void CheckSize(ImageArchive archive, string digest, string name, long size)
    {
        long length = archive.Length(name) ?? throw LayoutErrors.Missing(archive.Path, name);
        if (length != size)
        {
            throw LayoutErrors.Mismatch(archive.Path, digest,
                $"is {length} bytes where its descriptor says {size}");
        }
    }

    /// <summary>
    /// Copies the layers, then config, manifest and index, into the cache, each verified against
    /// its digest as it is written (<c>BlobDigestMismatch</c>, and nothing of that blob stored).
    /// Adds each digest it publishes to <paramref name="published"/>, as it goes, so that a
    /// failure, here or later, can take back what this import added.
    /// </summary>
    public async Task StoreAsync(
        ImageArchive archive,
        LayerCache cache,
        IProgress<LayerProgress>? layers,
        ICollection<string> published,
        CancellationToken cancellationToken)
    {
        foreach (OciDescriptor layer in Manifest.Layers.DistinctBy(layer => layer.Digest))
        {
            layers?.Report(new LayerProgress(layer.Digest, 0, layer.Size));
            if (!cache.Contains(layer.Digest))
            {
                Stream content = archive.Open(LayerFiles[layer.Digest]);
                await using (content.ConfigureAwait(false))
                {
                    await PutAsync(archive, cache, layer.Digest, content, published, cancellationToken)
                        .ConfigureAwait(false);
                }
            }

            layers?.Report(new LayerProgress(layer.Digest, layer.Size, layer.Size));
        }

        foreach (byte[]? document in new[] { ConfigJson, ManifestJson, IndexJson })
        {
            if (document is not null && !cache.Contains(ContentDigest.Of(document)))
            {
                using var content = new MemoryStream(document, writable: false);
                await PutAsync(archive, cache, ContentDigest.Of(document), content, published,
                    cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private static async Task PutAsync(
        ImageArchive archive,
        LayerCache cache,
        string digest,
        Stream content,
        ICollection<string> published,
        CancellationToken cancellationToken)
    {
        try
        {
            await cache.PutAsync(digest, content, cancellationToken).ConfigureAwait(false);
            published.Add(digest);
        }
        catch (SandboxException e) when (e.ErrorId == "BlobDigestMismatch")
        {
            throw LayoutErrors.Mismatch(archive.Path, digest, "does not match its digest (truncated or "
                + "altered)", e);
        }
    }
}
