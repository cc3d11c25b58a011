using System.Text.Json;
using System.Text.Json.Serialization;
using Microsandbox.Engine.Images.Cache;

namespace Microsandbox.Engine.Images.Registry;

/// <summary>A reference to content by digest and size, as manifests and indexes hold them.</summary>
public sealed record OciDescriptor
{
    /// <summary>The media type of the referenced content.</summary>
    [JsonPropertyName("mediaType")]
    public string MediaType { get; init; } = "";

    /// <summary>The content's digest.</summary>
    [JsonPropertyName("digest")]
    public required string Digest { get; init; }

    /// <summary>The content's size in bytes.</summary>
    [JsonPropertyName("size")]
    public required long Size { get; init; }

    /// <summary>In an index, the platform the referenced manifest is for.</summary>
    [JsonPropertyName("platform")]
    public OciPlatform? Platform { get; init; }

    /// <summary>Annotations, when there are any.</summary>
    [JsonPropertyName("annotations")]
    public IReadOnlyDictionary<string, string>? Annotations { get; init; }
}

/// <summary>The platform of an index entry.</summary>
public sealed record OciPlatform
{
    /// <summary>The operating system, such as <c>linux</c>.</summary>
    [JsonPropertyName("os")]
    public string? Os { get; init; }

    /// <summary>The architecture, such as <c>amd64</c>.</summary>
    [JsonPropertyName("architecture")]
    public string? Architecture { get; init; }

    /// <summary>The CPU variant, such as <c>v8</c>.</summary>
    [JsonPropertyName("variant")]
    public string? Variant { get; init; }

    /// <summary>The OS version (Windows images).</summary>
    [JsonPropertyName("os.version")]
    public string? OsVersion { get; init; }

    /// <summary><c>os/architecture[/variant]</c>.</summary>
    public override string ToString() =>
        Variant is null ? $"{Os}/{Architecture}" : $"{Os}/{Architecture}/{Variant}";
}

/// <summary>An image manifest (OCI or Docker schema 2): one config and the layers, bottom first.</summary>
public sealed record ImageManifest
{
    /// <summary>Always 2.</summary>
    [JsonPropertyName("schemaVersion")]
    public int SchemaVersion { get; init; } = 2;

    /// <summary>The manifest's own media type; OCI lets it be left out.</summary>
    [JsonPropertyName("mediaType")]
    public string? MediaType { get; init; }

    /// <summary>The image config.</summary>
    [JsonPropertyName("config")]
    public required OciDescriptor Config { get; init; }

    /// <summary>The layers, applied in order.</summary>
    [JsonPropertyName("layers")]
    public required IReadOnlyList<OciDescriptor> Layers { get; init; }

    /// <summary>Annotations, when there are any.</summary>
    [JsonPropertyName("annotations")]
    public IReadOnlyDictionary<string, string>? Annotations { get; init; }

    /// <summary>Parses a manifest; fails with <c>InvalidManifest</c> when it is not a usable one.</summary>
    public static ImageManifest Parse(ReadOnlySpan<byte> json, object? target)
    {
        ImageManifest? manifest = ManifestJson.Deserialize<ImageManifest>(json, target);
        if (manifest?.Config is null || manifest.Layers is null)
        {
            throw ManifestJson.Invalid("it has no config or no layers", target);
        }

        ManifestJson.CheckDescriptor(manifest.Config, target);
        foreach (OciDescriptor layer in manifest.Layers)
        {
            ManifestJson.CheckDescriptor(layer, target);
        }

        return manifest;
    }

    /// <summary>The manifest as JSON, as it would be pushed.</summary>
    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, ManifestJson.Options);

    /// <summary>
    /// Fails unless this is an image a sandbox can be made from: an image config
    /// (<c>UnsupportedManifest</c>) and layers that unpack (<c>UnsupportedLayerType</c>).
    /// </summary>
    internal void EnsureUnpackable(object target)
    {
        string configType = Config.MediaType;
        if (configType is not ("" or ImageMediaTypes.OciConfig or ImageMediaTypes.DockerConfig))
        {
            throw RegistryErrors.Unsupported(target,
                $"its config is of type '{configType}', not an image config");
        }

        OciDescriptor? foreign = Layers.FirstOrDefault(l => !LayerTar.IsLayerMediaType(l.MediaType));
        if (foreign is not null)
        {
            throw new SandboxException("UnsupportedLayerType", SandboxErrorKind.InvalidArgument,
                $"The image {target} has a layer of type '{foreign.MediaType}', which cannot be unpacked.",
                target);
        }
    }
}

/// <summary>An image index (OCI) or manifest list (Docker): one manifest per platform.</summary>
public sealed record ImageIndex
{
    /// <summary>Always 2.</summary>
    [JsonPropertyName("schemaVersion")]
    public int SchemaVersion { get; init; } = 2;

    /// <summary>The index's own media type; OCI lets it be left out.</summary>
    [JsonPropertyName("mediaType")]
    public string? MediaType { get; init; }

    /// <summary>The manifests, each with its platform.</summary>
    [JsonPropertyName("manifests")]
    public required IReadOnlyList<OciDescriptor> Manifests { get; init; }

    /// <summary>Annotations, when there are any.</summary>
    [JsonPropertyName("annotations")]
    public IReadOnlyDictionary<string, string>? Annotations { get; init; }

    /// <summary>Parses an index; fails with <c>InvalidManifest</c> when it is not a usable one.</summary>
    public static ImageIndex Parse(ReadOnlySpan<byte> json, object? target)
    {
        ImageIndex? index = ManifestJson.Deserialize<ImageIndex>(json, target);
        if (index?.Manifests is null)
        {
            throw ManifestJson.Invalid("it lists no manifests", target);
        }

        foreach (OciDescriptor entry in index.Manifests)
        {
            ManifestJson.CheckDescriptor(entry, target);
        }

        return index;
    }

    /// <summary>
    /// The entry for <paramref name="platform"/>, preferring one that names no variant or the
    /// first listed; fails with <c>ImagePlatformNotFound</c> when the index has none.
    /// </summary>
    public OciDescriptor Select(ImagePlatform platform, object? target)
    {
        ArgumentNullException.ThrowIfNull(platform);

        // Attestation manifests (BuildKit's unknown/unknown) and nested indexes are not images.
        OciDescriptor? chosen = Manifests
            .Where(m => ImageMediaTypes.IsManifest(m.MediaType) || string.IsNullOrEmpty(m.MediaType))
            .Where(m => platform.Accepts(m.Platform?.Os, m.Platform?.Architecture, m.Platform?.Variant))
            .OrderBy(m => m.Platform?.Variant is null ? 0 : 1)
            .FirstOrDefault();
        if (chosen is null)
        {
            string offered = string.Join(", ", Manifests.Select(m => m.Platform?.ToString() ?? "(none)"));
            throw new SandboxException("ImagePlatformNotFound", SandboxErrorKind.NotFound,
                $"The image {target} has no manifest for {platform}; it offers {offered}.", target);
        }

        return chosen;
    }

    /// <summary>The index as JSON, as it would be pushed.</summary>
    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, ManifestJson.Options);
}

/// <summary>The JSON handling manifests and indexes share.</summary>
internal static class ManifestJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>
    /// The media type of a manifest document: the one it declares, else the one the registry sent,
    /// else what its shape says (OCI allows leaving <c>mediaType</c> out).
    /// </summary>
    public static string? DetectMediaType(ReadOnlySpan<byte> json, string? contentType)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(json.ToArray());
            JsonElement root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                return null;
            }

            if (root.TryGetProperty("mediaType", out JsonElement declared)
                && declared.ValueKind == JsonValueKind.String)
            {
                return declared.GetString();
            }

            if (ImageMediaTypes.IsIndex(contentType) || ImageMediaTypes.IsManifest(contentType))
            {
                return contentType;
            }

            return root.TryGetProperty("manifests", out _) ? ImageMediaTypes.OciIndex
                : root.TryGetProperty("layers", out _) ? ImageMediaTypes.OciManifest
                : contentType;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    public static T? Deserialize<T>(ReadOnlySpan<byte> json, object? target)
        where T : class
    {
        try
        {
            return JsonSerializer.Deserialize<T>(json, Options);
        }
        catch (JsonException e)
        {
            throw Invalid(e.Message, target, e);
        }
    }

    public static void CheckDescriptor(OciDescriptor descriptor, object? target)
    {
        if (!ContentDigest.IsValid(descriptor.Digest) || descriptor.Size < 0)
        {
            throw Invalid($"it references '{descriptor.Digest}' ({descriptor.Size} bytes), which is not a "
                + "sha256 digest with a size", target);
        }
    }

    public static SandboxException Invalid(string why, object? target, Exception? inner = null) =>
        new("InvalidManifest", SandboxErrorKind.InvalidResult,
            $"The manifest of {target} is unusable: {why}.", target, inner);
}
