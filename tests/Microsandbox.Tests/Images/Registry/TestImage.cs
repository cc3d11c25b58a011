using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsandbox.Engine.Images.Cache;
using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.Tests.Images.Registry;

/// <summary>One layer of a test image: the blob as pushed and the tar inside it.</summary>
internal sealed record TestLayer(byte[] Blob, byte[] Tar, string MediaType)
{
    public string Digest => ContentDigest.Of(Blob);

    public string DiffId => ContentDigest.Of(Tar);

    public OciDescriptor Descriptor => new() { MediaType = MediaType, Digest = Digest, Size = Blob.Length };
}

/// <summary>
/// A small but real image built in memory: tar layers of random bytes (so no two images share a
/// blob, and tampering with one in the registry touches no other test), a config with every field
/// the engine applies, and a manifest.
/// </summary>
internal sealed class TestImage
{
    private TestImage(string architecture, IReadOnlyList<TestLayer> layers, byte[] config, bool docker)
    {
        Architecture = architecture;
        Layers = layers;
        Config = config;
        var manifest = new ImageManifest
        {
            MediaType = docker ? ImageMediaTypes.DockerManifest : ImageMediaTypes.OciManifest,
            Config = new OciDescriptor
            {
                MediaType = docker ? ImageMediaTypes.DockerConfig : ImageMediaTypes.OciConfig,
                Digest = ContentDigest.Of(config),
                Size = config.Length,
            },
            Layers = [.. layers.Select(layer => layer.Descriptor)],
        };
        ManifestJson = manifest.ToJson();
        Manifest = manifest;
    }

    public string Architecture { get; }

    public IReadOnlyList<TestLayer> Layers { get; }

    public byte[] Config { get; }

    public string ConfigDigest => ContentDigest.Of(Config);

    public ImageManifest Manifest { get; }

    public byte[] ManifestJson { get; }

    public string ManifestDigest => ContentDigest.Of(ManifestJson);

    public string ManifestMediaType => Manifest.MediaType!;

    /// <summary>
    /// An image of <paramref name="layers"/> gzip layers of about <paramref name="bytesPerLayer"/>
    /// each; <paramref name="zstdTop"/> makes the top layer zstd, <paramref name="docker"/> uses
    /// Docker's media types instead of OCI's.
    /// </summary>
    public static TestImage Create(
        string architecture = "amd64", int layers = 3, int bytesPerLayer = 48 * 1024, bool zstdTop = false,
        bool docker = false)
    {
        var built = new List<TestLayer>();
        for (int i = 0; i < layers; i++)
        {
            byte[] tar = Tar(
                ($"etc/layer-{i}.txt", Encoding.UTF8.GetBytes($"layer {i} of an {architecture} image\n")),
                ($"data/random-{i}.bin", RandomNumberGenerator.GetBytes(bytesPerLayer)));
            bool zstd = zstdTop && i == layers - 1;
            built.Add(new TestLayer(zstd ? Zstd(tar) : Gzip(tar), tar,
                zstd ? ImageMediaTypes.OciLayerZstd
                : docker ? ImageMediaTypes.DockerLayerGzip : ImageMediaTypes.OciLayerGzip));
        }

        var diffIds = new JsonArray([.. built.Select(layer => (JsonNode)layer.DiffId)]);
        var config = new JsonObject
        {
            ["architecture"] = architecture,
            ["os"] = "linux",
            ["created"] = "2024-05-01T10:20:30Z",
            ["config"] = new JsonObject
            {
                ["Env"] = new JsonArray("PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=hello"),
                ["WorkingDir"] = "/srv/app",
                ["User"] = "1000:1000",
                ["Entrypoint"] = new JsonArray("/bin/sh", "-c"),
                ["Cmd"] = new JsonArray("echo hello"),
                ["Labels"] = new JsonObject { ["org.example.team"] = "sandbox", ["arch"] = architecture },
                ["StopSignal"] = "SIGTERM",
            },
            ["rootfs"] = new JsonObject { ["type"] = "layers", ["diff_ids"] = diffIds },
        };
        return new TestImage(architecture, built, Encoding.UTF8.GetBytes(config.ToJsonString()), docker);
    }

    /// <summary>
    /// This image with other layers and its config but for the diff_ids, which become those of the
    /// layers' <see cref="TestLayer.Tar"/>: a layer whose blob does not unpack to its Tar is one whose
    /// diff_id disagrees with it.
    /// </summary>
    public TestImage WithLayers(params TestLayer[] layers)
    {
        JsonNode config = JsonNode.Parse(Config)!;
        config["rootfs"]!["diff_ids"] = new JsonArray([.. layers.Select(layer => (JsonNode)layer.DiffId)]);
        return new(Architecture, layers, Encoding.UTF8.GetBytes(config.ToJsonString()),
            ManifestMediaType == ImageMediaTypes.DockerManifest);
    }

    /// <summary>Pushes layers, config and manifest, tagged as <paramref name="reference"/> says.</summary>
    public async Task PushAsync(RegistryClient client, ImageReference reference)
    {
        foreach (TestLayer layer in Layers)
        {
            await client.PushBlobAsync(reference, layer.Blob, CancellationToken.None);
        }

        await client.PushBlobAsync(reference, Config, CancellationToken.None);
        await client.PushManifestAsync(reference, ManifestMediaType, ManifestJson, CancellationToken.None);
    }

    /// <summary>
    /// Pushes each image by digest and then an OCI index of them under <paramref name="reference"/>'s
    /// tag; returns the index as pushed.
    /// </summary>
    public static Task<byte[]> PushIndexAsync(
        RegistryClient client, ImageReference reference, params TestImage[] images) =>
        PushIndexAsync(client, reference, ImageMediaTypes.OciIndex, images);

    /// <summary>
    /// Pushes each image by digest and then an index of them of <paramref name="mediaType"/> (an
    /// OCI index or a Docker manifest list) under <paramref name="reference"/>'s tag; returns the
    /// index as pushed.
    /// </summary>
    public static async Task<byte[]> PushIndexAsync(
        RegistryClient client, ImageReference reference, string mediaType, params TestImage[] images)
    {
        foreach (TestImage image in images)
        {
            await image.PushAsync(client, reference.WithDigest(image.ManifestDigest));
        }

        byte[] json = IndexOf(mediaType, images);
        await client.PushManifestAsync(reference, mediaType, json, CancellationToken.None);
        return json;
    }

    /// <summary>An OCI index of the images, each entry with its platform.</summary>
    public static byte[] IndexOf(params TestImage[] images) => IndexOf(ImageMediaTypes.OciIndex, images);

    /// <summary>
    /// An index of the images of <paramref name="mediaType"/>, each entry with its platform, in
    /// the order given.
    /// </summary>
    public static byte[] IndexOf(string mediaType, params TestImage[] images) => new ImageIndex
    {
        MediaType = mediaType,
        Manifests = [.. images.Select(image => new OciDescriptor
        {
            MediaType = image.ManifestMediaType,
            Digest = image.ManifestDigest,
            Size = image.ManifestJson.Length,
            Platform = new OciPlatform { Os = "linux", Architecture = image.Architecture },
        })],
    }.ToJson();

    public static byte[] Tar(params (string Path, byte[] Content)[] files)
    {
        using var output = new MemoryStream();
        using (var writer = new TarWriter(output, TarEntryFormat.Pax, leaveOpen: true))
        {
            foreach (var (path, content) in files)
            {
                var entry = new PaxTarEntry(TarEntryType.RegularFile, path)
                {
                    DataStream = new MemoryStream(content),
                    Mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead
                        | UnixFileMode.OtherRead,
                };
                writer.WriteEntry(entry);
            }
        }

        return output.ToArray();
    }

    public static byte[] Gzip(byte[] content)
    {
        using var output = new MemoryStream();
        using (var gzip = new GZipStream(output, CompressionLevel.Fastest, leaveOpen: true))
        {
            gzip.Write(content);
        }

        return output.ToArray();
    }

    public static byte[] Zstd(byte[] content)
    {
        using var output = new MemoryStream();
        using (var zstd = new ZstdSharp.CompressionStream(output, level: 3, leaveOpen: true))
        {
            zstd.Write(content);
        }

        return output.ToArray();
    }

    /// <summary>
    /// A zstd frame of <paramref name="content"/> whose blocks are overwritten with 0xFF, so the
    /// magic and frame header stay valid and the first block header reads as the reserved type.
    /// </summary>
    public static byte[] CorruptZstd(byte[] content)
    {
        byte[] zstd = Zstd(content);
        // Magic (4), frame header descriptor and window descriptor: a streamed frame has no size field.
        zstd.AsSpan(6).Fill(0xff);
        return zstd;
    }
}
