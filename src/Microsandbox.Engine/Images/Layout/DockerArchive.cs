using System.Security.Cryptography;
using System.Text.Json;
using Microsandbox.Engine.Images.Cache;
using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.Engine.Images.Layout;

/// <summary>
/// Reads the archive <c>docker save</c> and <c>skopeo copy … docker-archive:FILE</c> write: a
/// <c>manifest.json</c> listing each image's config file, RepoTags and layer files. It holds no
/// registry manifest, so one is made: an OCI manifest of the config and the layers, each layer
/// typed by its first bytes (plain tar, gzip or zstd).
/// </summary>
internal static class DockerArchive
{
    /// <summary>The file that lists a docker save archive's images.</summary>
    public const string ManifestFile = "manifest.json";

    /// <summary>Whether the archive is a docker save archive.</summary>
    public static bool Recognizes(ImageArchive archive) => archive.Contains(ManifestFile);

    /// <summary>
    /// The image <paramref name="reference"/> chooses (or the only one), checked against
    /// <paramref name="platform"/>. A plain tar layer must have the digest the config's
    /// <c>diff_ids</c> give it, which the cache checks as it stores the layer.
    /// </summary>
    public static ArchiveImage Read(ImageArchive archive, string? reference, ImagePlatform platform)
    {
        string path = archive.Path;
        var (chosen, names) = ArchiveNames.Choose(path, ReadEntries(archive), reference);
        (string configFile, IReadOnlyList<string> layerFiles) = chosen.Item;
        byte[] config = archive.ReadAll(configFile, ArchiveImage.MaxConfigBytes);
        if (NamedDigest(configFile) is { } named && named != ContentDigest.Of(config))
        {
            throw LayoutErrors.Mismatch(path, named, $"has the digest {ContentDigest.Of(config)}");
        }

        ImageConfig parsed = ImageConfig.Parse(config, path);
        platform.EnsureRuns(parsed, path);
        if (parsed.DiffIds.Count != 0 && parsed.DiffIds.Count != layerFiles.Count)
        {
            throw LayoutErrors.Invalid(path, $"the config of {chosen.Display} lists "
                + $"{parsed.DiffIds.Count} layer(s) and {ManifestFile} {layerFiles.Count}");
        }

        var layers = new List<OciDescriptor>();
        var files = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < layerFiles.Count; i++)
        {
            string file = layerFiles[i];
            long size = archive.Length(file) ?? throw LayoutErrors.Missing(path, file);
            string mediaType = MediaTypeOf(archive, file);
            string digest = DigestOf(archive, file, mediaType, parsed.DiffIds.ElementAtOrDefault(i));
            layers.Add(new OciDescriptor { MediaType = mediaType, Digest = digest, Size = size });
            files[digest] = file;
        }

        var manifest = new ImageManifest
        {
            MediaType = ImageMediaTypes.OciManifest,
            Config = new OciDescriptor
            {
                MediaType = ImageMediaTypes.OciConfig,
                Digest = ContentDigest.Of(config),
                Size = config.Length,
            },
            Layers = layers,
        };
        return new ArchiveImage
        {
            Names = names,
            Platform = platform,
            Manifest = manifest,
            ManifestJson = manifest.ToJson(),
            ConfigJson = config,
            LayerFiles = files,
        };
    }

    private static List<ArchiveCandidate<(string Config, IReadOnlyList<string> Layers)>> ReadEntries(
        ImageArchive archive)
    {
        var entries = new List<ArchiveCandidate<(string, IReadOnlyList<string>)>>();
        try
        {
            using JsonDocument document = JsonDocument.Parse(
                archive.ReadAll(ManifestFile, ArchiveImage.MaxManifestBytes));
            if (document.RootElement.ValueKind != JsonValueKind.Array)
            {
                throw LayoutErrors.Invalid(archive.Path, $"its {ManifestFile} is not a list of images");
            }

            foreach (JsonElement image in document.RootElement.EnumerateArray())
            {
                string config = image.GetProperty("Config").GetString() ?? "";
                List<string> layers = [.. image.GetProperty("Layers").EnumerateArray()
                    .Select(layer => layer.GetString() ?? "")];
                List<string> names = image.TryGetProperty("RepoTags", out JsonElement tags)
                    && tags.ValueKind == JsonValueKind.Array
                    ? [.. tags.EnumerateArray().Select(tag => ArchiveNames.Canonical(tag.GetString()))
                        .OfType<string>().Distinct(StringComparer.Ordinal)]
                    : [];
                entries.Add(new(names, null, (config, layers)));
            }
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or KeyNotFoundException)
        {
            throw LayoutErrors.Invalid(archive.Path, $"its {ManifestFile} is unusable ({e.Message})", e);
        }

        return entries;
    }

    private static string MediaTypeOf(ImageArchive archive, string file)
    {
        using Stream layer = archive.Open(file);
        Span<byte> head = stackalloc byte[4];
        int read = layer.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        return read >= 2 && head[..2].SequenceEqual(LayerTar.GzipMagic) ? ImageMediaTypes.OciLayerGzip
            : read >= 4 && head.SequenceEqual(LayerTar.ZstdMagic) ? ImageMediaTypes.OciLayerZstd
            : ImageMediaTypes.OciLayer;
    }

    // A plain tar's digest is its diff_id, and the file name of Docker 25's blobs is theirs; the
    // cache verifies either while storing. Only a compressed layer in an old archive is read twice.
    private static string DigestOf(ImageArchive archive, string file, string mediaType, string? diffId)
    {
        if (NamedDigest(file) is { } named)
        {
            return named;
        }

        if (mediaType == ImageMediaTypes.OciLayer && ContentDigest.IsValid(diffId))
        {
            return diffId!;
        }

        using Stream layer = archive.Open(file);
        return ContentDigest.FromHash(SHA256.HashData(layer));
    }

    // The digest a file's name gives it: blobs/sha256/<hex>, as Docker 25 on writes them.
    private static string? NamedDigest(string file)
    {
        string name = ImageArchive.Normalize(file) ?? "";
        string digest = ContentDigest.Sha256Prefix + name[(name.LastIndexOf('/') + 1)..];
        return name.StartsWith("blobs/sha256/", StringComparison.Ordinal) && ContentDigest.IsValid(digest)
            ? digest : null;
    }
}
