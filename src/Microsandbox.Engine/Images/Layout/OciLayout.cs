using System.Text.Json;
using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.Engine.Images.Layout;

/// <summary>
/// Reads an OCI image layout (<c>oci-layout</c>, <c>index.json</c>, <c>blobs/sha256/…</c>) as
/// <c>skopeo copy … oci:DIR</c>, <c>oci-archive:FILE</c> and Docker 25's <c>docker save</c> write
/// it. The entries of <c>index.json</c> are the layout's images, named by their annotations;
/// entries sharing a name are that image's platforms. From there the host's manifest is chosen
/// as a pull chooses it: through at most one index, then an image manifest.
/// </summary>
internal static class OciLayout
{
    /// <summary>The file that marks a folder as an OCI image layout.</summary>
    public const string MarkerFile = "oci-layout";

    /// <summary>The layout's own index: its images.</summary>
    public const string IndexFile = "index.json";

    private const string RefNameAnnotation = "org.opencontainers.image.ref.name";
    private const string ContainerdNameAnnotation = "io.containerd.image.name";

    /// <summary>Whether the archive is an OCI image layout.</summary>
    public static bool Recognizes(ImageArchive archive) => archive.Contains(MarkerFile);

    /// <summary>
    /// The image <paramref name="reference"/> chooses (or the only one), resolved for
    /// <paramref name="platform"/> and checked: every blob it needs is in the layout at its size,
    /// and the manifest and config have their digests.
    /// </summary>
    public static ArchiveImage Read(ImageArchive archive, string? reference, ImagePlatform platform)
    {
        string path = archive.Path;
        CheckMarker(archive);
        ImageIndex index;
        try
        {
            index = ImageIndex.Parse(archive.ReadAll(IndexFile, ArchiveImage.MaxManifestBytes), path);
        }
        catch (SandboxException e) when (e.ErrorId == "InvalidManifest")
        {
            throw LayoutErrors.Invalid(path, $"its {IndexFile} is unusable ({e.Message})", e);
        }

        var candidates = index.Manifests
            .Select(entry => (Entry: entry, Names: NamesOf(entry), Tag: TagOf(entry)))
            .GroupBy(e => (string.Join(' ', e.Names), e.Tag))
            .Select(group => new ArchiveCandidate<List<OciDescriptor>>(
                group.First().Names, group.Key.Tag, [.. group.Select(e => e.Entry)]))
            .ToList();
        var (chosen, names) = ArchiveNames.Choose(path, candidates, reference);

        // Entries of one name are its platforms, as an index's are.
        OciDescriptor entry = chosen.Item.Count == 1 ? chosen.Item[0]
            : new ImageIndex { Manifests = chosen.Item }.Select(platform, path);
        (byte[] json, string mediaType) = ReadDocument(archive, entry);
        byte[]? indexJson = null;
        if (ImageMediaTypes.IsIndex(mediaType))
        {
            indexJson = json;
            entry = ImageIndex.Parse(json, path).Select(platform, path);
            (json, mediaType) = ReadDocument(archive, entry);
            if (ImageMediaTypes.IsIndex(mediaType))
            {
                throw RegistryErrors.Unsupported(path, "its index points at another index");
            }
        }

        ImageManifest manifest = ImageManifest.Parse(json, path);
        manifest.EnsureUnpackable(path);
        byte[] config = ArchiveImage.ReadBlob(archive, manifest.Config, ArchiveImage.MaxConfigBytes);
        platform.EnsureRuns(ImageConfig.Parse(config, path), path);
        var layers = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (OciDescriptor layer in manifest.Layers)
        {
            string file = ArchiveImage.BlobFile(layer.Digest);
            ArchiveImage.CheckSize(archive, layer.Digest, file, layer.Size);
            layers[layer.Digest] = file;
        }

        return new ArchiveImage
        {
            Names = names,
            Platform = platform,
            Manifest = manifest,
            ManifestJson = json,
            IndexJson = indexJson,
            ConfigJson = config,
            LayerFiles = layers,
        };
    }

    private static void CheckMarker(ImageArchive archive)
    {
        string? version = null;
        try
        {
            using JsonDocument marker = JsonDocument.Parse(archive.ReadAll(MarkerFile, 64 << 10));
            if (marker.RootElement.ValueKind == JsonValueKind.Object
                && marker.RootElement.TryGetProperty("imageLayoutVersion", out JsonElement value)
                && value.ValueKind == JsonValueKind.String)
            {
                version = value.GetString();
            }
        }
        catch (JsonException e)
        {
            throw LayoutErrors.Invalid(archive.Path, $"its {MarkerFile} is not JSON ({e.Message})", e);
        }

        if (version is null || !version.StartsWith("1.", StringComparison.Ordinal))
        {
            throw LayoutErrors.Invalid(archive.Path,
                $"its {MarkerFile} names layout version '{version}', not 1.x");
        }
    }

    // A manifest or index from the layout, with its media type as it declares it, else as the
    // descriptor or its shape says.
    private static (byte[] Json, string MediaType) ReadDocument(ImageArchive archive, OciDescriptor entry)
    {
        byte[] json = ArchiveImage.ReadBlob(archive, entry, ArchiveImage.MaxManifestBytes);
        string? mediaType = ManifestJson.DetectMediaType(json, entry.MediaType);
        if (!ImageMediaTypes.IsIndex(mediaType) && !ImageMediaTypes.IsManifest(mediaType))
        {
            throw RegistryErrors.Unsupported(archive.Path, $"its manifest {entry.Digest} is of type "
                + $"'{mediaType ?? "unknown"}'; only OCI and Docker schema 2 manifests and indexes are "
                + "supported");
        }

        return (json, mediaType!);
    }

    private static List<string> NamesOf(OciDescriptor entry)
    {
        var names = new List<string>();
        if (ArchiveNames.Canonical(Annotation(entry, ContainerdNameAnnotation)) is { } containerd)
        {
            names.Add(containerd);
        }

        if (Annotation(entry, RefNameAnnotation) is { } refName && IsFullReference(refName)
            && ArchiveNames.Canonical(refName) is { } full && !names.Contains(full))
        {
            names.Add(full);
        }

        return names;
    }

    // The spec lets ref.name be a full reference or a tag alone; a tag holds no '/', ':' or '@'.
    private static string? TagOf(OciDescriptor entry) =>
        Annotation(entry, RefNameAnnotation) is { } refName && !IsFullReference(refName) ? refName : null;

    private static bool IsFullReference(string name) => name.IndexOfAny(['/', ':', '@']) >= 0;

    private static string? Annotation(OciDescriptor entry, string key) =>
        entry.Annotations?.TryGetValue(key, out string? value) == true && value.Length > 0 ? value : null;
}
