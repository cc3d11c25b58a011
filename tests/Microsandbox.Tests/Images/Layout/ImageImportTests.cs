using System.Formats.Tar;
using System.IO.Compression;
using System.Text;
using System.Text.Json.Nodes;
using Microsandbox.Engine;
using Microsandbox.Engine.Images.Cache;
using Microsandbox.Engine.Images.Registry;
using Microsandbox.Tests.Images.Registry;

namespace Microsandbox.Tests.Images.Layout;

/// <summary>
/// ImageStore.ImportAsync on real exports written here: OCI layouts (folders, tars, gzip tars)
/// and docker save archives, made of real layer tars, so that every import also builds its
/// EROFS base. Bad exports must fail with their id and leave the cache as it was.
/// </summary>
public sealed class ImageImportTests : IDisposable
{
    private const string RefName = "org.opencontainers.image.ref.name";
    private static readonly CancellationToken None = CancellationToken.None;

    private readonly string _root = Directory.CreateTempSubdirectory("msb-import-").FullName;
    private readonly SandboxHome _home;
    private readonly ImageStore _images;

    public ImageImportTests()
    {
        _home = new SandboxHome(Path.Join(_root, "home"));
        _images = new SandboxEngine(_home).Images;
    }

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private LayerCache Cache => LayerCache.ForHome(_home);

    private string ImagesFolder => Path.Join(_home.CacheDirectory, "images");

    private Task<IReadOnlyList<SandboxImageInfo>> ImportAsync(string path, string? reference = null) =>
        _images.ImportAsync(path, reference, null, null, None);

    private async Task<SandboxException> ImportFails(string path, string? reference = null) =>
        await Assert.ThrowsAsync<SandboxException>(() => ImportAsync(path, reference));

    /// <summary>Nothing from a failed import: no record, no blob, no base, no temporary file.</summary>
    private void AssertCacheEmpty()
    {
        Assert.Empty(Cache.ListReferences());
        Assert.Empty(Cache.ListBlobs());
        Assert.Empty(Directory.GetFiles(Cache.IncomingDirectory));
        Assert.Empty(Directory.Exists(ImagesFolder) ? Directory.GetFiles(ImagesFolder) : []);
    }

    /// <summary>
    /// Writes an OCI layout holding <paramref name="images"/>' blobs and an index.json of
    /// <paramref name="entries"/> (by default one entry per image, named <paramref name="name"/>).
    /// </summary>
    private string WriteLayout(
        string name, string? refName, TestImage[] images, OciDescriptor[]? entries = null,
        params byte[][] extraBlobs)
    {
        string dir = Path.Join(_root, name);
        Directory.CreateDirectory(Path.Join(dir, "blobs", "sha256"));
        File.WriteAllText(Path.Join(dir, "oci-layout"), """{"imageLayoutVersion":"1.0.0"}""");
        IEnumerable<byte[]> blobs = images.SelectMany(image =>
            image.Layers.Select(layer => layer.Blob).Append(image.Config).Append(image.ManifestJson));
        foreach (byte[] blob in blobs.Concat(extraBlobs))
        {
            File.WriteAllBytes(Path.Join(dir, "blobs", "sha256", ContentDigest.Of(blob)[7..]), blob);
        }

        entries ??= [.. images.Select(image => new OciDescriptor
        {
            MediaType = image.ManifestMediaType,
            Digest = image.ManifestDigest,
            Size = image.ManifestJson.Length,
            Annotations = refName is null ? null : new Dictionary<string, string> { [RefName] = refName },
        })];
        var index = new ImageIndex { MediaType = ImageMediaTypes.OciIndex, Manifests = entries };
        File.WriteAllBytes(Path.Join(dir, "index.json"), index.ToJson());
        return dir;
    }

    private static OciDescriptor EntryFor(byte[] index, string refName) => new()
    {
        MediaType = ImageMediaTypes.OciIndex,
        Digest = ContentDigest.Of(index),
        Size = index.Length,
        Annotations = new Dictionary<string, string> { [RefName] = refName },
    };

    private static string BlobIn(string layout, string digest) =>
        Path.Join(layout, "blobs", "sha256", digest[7..]);

    private string TarOf(string folder, bool gzip)
    {
        string tar = Path.Join(_root, Path.GetFileName(folder) + (gzip ? ".tar.gz" : ".tar"));
        using FileStream file = File.Create(tar);
        using Stream output = gzip ? new GZipStream(file, CompressionLevel.Fastest) : file;
        // With the base folder, so every path starts with the layout's folder name.
        TarFile.CreateFromDirectory(folder, output, includeBaseDirectory: true);
        return tar;
    }

    /// <summary>The old docker save format: config as &lt;hex&gt;.json, plain layer tars in folders.</summary>
    private string WriteDockerArchive(string name, TestImage image, params string[] repoTags)
    {
        string tar = Path.Join(_root, name + ".tar");
        using FileStream file = File.Create(tar);
        using var writer = new TarWriter(file, TarEntryFormat.Pax);
        void Add(string path, byte[] content) =>
            writer.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, path)
            {
                DataStream = new MemoryStream(content),
            });

        string configFile = image.ConfigDigest[7..] + ".json";
        Add(configFile, image.Config);
        var layers = new JsonArray();
        for (int i = 0; i < image.Layers.Count; i++)
        {
            string layerFile = $"layer{i}/layer.tar";
            Add(layerFile, image.Layers[i].Tar);
            layers.Add(layerFile);
        }

        var manifest = new JsonArray(new JsonObject
        {
            ["Config"] = configFile,
            ["RepoTags"] = new JsonArray([.. repoTags.Select(tag => (JsonNode)tag)]),
            ["Layers"] = layers,
        });
        Add("manifest.json", Encoding.UTF8.GetBytes(manifest.ToJsonString()));
        return tar;
    }

    [Fact]
    public async Task A_layout_folder_imports_under_its_full_ref_name_as_a_pull_records_it()
    {
        TestImage image = TestImage.Create(layers: 2);
        string layout = WriteLayout("good", "registry.example/team/app:1.0", [image]);

        SandboxImageInfo info = Assert.Single(await ImportAsync(layout));

        Assert.Equal("registry.example/team/app:1.0", info.Reference);
        Assert.Equal(image.ManifestDigest, info.Digest);
        Assert.Equal("linux/amd64", info.Platform);
        Assert.Equal(2, info.Layers);
        Assert.True(File.Exists(info.BasePath));
        CachedReference entry = Assert.Single(Cache.ListReferences());
        Assert.Null(entry.IndexDigest);
        PulledImage? loaded = await PulledImage.LoadAsync(Cache, ImageReference.Parse(info.Reference), None);
        Assert.NotNull(loaded);
        Assert.Equal("/srv/app", loaded.Config.WorkingDir);
        Assert.Equal(info.Reference, Assert.Single(_images.List()).Reference);
        Assert.Empty(Directory.GetFiles(Cache.IncomingDirectory));
    }

    [Fact]
    public async Task A_bare_tag_needs_a_repository_from_Reference_and_is_ImageReferenceRequired_without()
    {
        TestImage image = TestImage.Create(layers: 1);
        string layout = WriteLayout("tagged", "2.5", [image]);

        SandboxException error = await ImportFails(layout);
        Assert.Equal("ImageReferenceRequired", error.ErrorId);
        Assert.Equal(layout, error.Target);
        AssertCacheEmpty();

        SandboxImageInfo info = Assert.Single(await ImportAsync(layout, "127.0.0.1:5000/team/app"));
        Assert.Equal("127.0.0.1:5000/team/app:2.5", info.Reference);
    }

    [Fact]
    public async Task A_tampered_layer_is_BlobDigestMismatch_and_nothing_of_the_image_is_cached()
    {
        TestImage image = TestImage.Create(layers: 2);
        string layout = WriteLayout("tampered", "registry.example/app:1", [image]);
        string tampered = BlobIn(layout, image.Layers[1].Digest);
        byte[] bytes = File.ReadAllBytes(tampered);
        bytes[^10] ^= 0xff;
        File.WriteAllBytes(tampered, bytes);

        SandboxException error = await ImportFails(layout);

        Assert.Equal("BlobDigestMismatch", error.ErrorId);
        Assert.Equal(layout, error.Target);
        Assert.Contains(image.Layers[1].Digest, error.Message, StringComparison.Ordinal);
        Assert.False(Cache.Contains(image.Layers[1].Digest));
        AssertCacheEmpty();
    }

    [Fact]
    public async Task A_truncated_layer_is_BlobDigestMismatch_before_anything_is_written()
    {
        TestImage image = TestImage.Create(layers: 2);
        string layout = WriteLayout("truncated", "registry.example/app:1", [image]);
        string blob = BlobIn(layout, image.Layers[0].Digest);
        File.WriteAllBytes(blob, File.ReadAllBytes(blob)[..100]);

        Assert.Equal("BlobDigestMismatch", (await ImportFails(layout)).ErrorId);
        AssertCacheEmpty();
    }

    [Fact]
    public async Task A_missing_blob_or_a_file_that_is_no_export_is_ImageLayoutInvalid()
    {
        TestImage image = TestImage.Create(layers: 1);
        string layout = WriteLayout("missing", "registry.example/app:1", [image]);
        File.Delete(BlobIn(layout, image.Layers[0].Digest));
        Assert.Equal("ImageLayoutInvalid", (await ImportFails(layout)).ErrorId);

        string junk = Path.Join(_root, "junk.tar");
        File.WriteAllBytes(junk, Encoding.UTF8.GetBytes(new string('x', 3000)));
        SandboxException error = await ImportFails(junk);
        Assert.Equal("ImageLayoutInvalid", error.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidData, error.Kind);

        Assert.Equal("ImportPathNotFound", (await ImportFails(Path.Join(_root, "nowhere"))).ErrorId);
        AssertCacheEmpty();
    }

    [Fact]
    public async Task An_index_with_only_arm64_is_ImagePlatformNotFound_as_a_pull_reports_it()
    {
        TestImage arm = TestImage.Create("arm64", layers: 1);
        byte[] index = TestImage.IndexOf(arm);
        string layout = WriteLayout("arm", null, [arm], [EntryFor(index, "latest")], index);

        SandboxException error = await ImportFails(layout, "registry.example/app");

        Assert.Equal("ImagePlatformNotFound", error.ErrorId);
        AssertCacheEmpty();
    }

    [Fact]
    public async Task A_multi_platform_index_yields_the_host_manifest_and_is_recorded_as_the_index()
    {
        TestImage amd = TestImage.Create("amd64", layers: 1);
        TestImage arm = TestImage.Create("arm64", layers: 1);
        byte[] index = TestImage.IndexOf(arm, amd);
        string layout = WriteLayout("multi", null, [amd, arm], [EntryFor(index, "3.1")], index);

        SandboxImageInfo info = Assert.Single(await ImportAsync(layout, "registry.example/app"));

        Assert.Equal("registry.example/app:3.1", info.Reference);
        Assert.Equal(amd.ManifestDigest, info.Digest);
        Assert.Equal(ContentDigest.Of(index), Assert.Single(Cache.ListReferences()).IndexDigest);
        Assert.False(Cache.Contains(arm.Layers[0].Digest), "the other platform's layers stay out");
    }

    [Fact]
    public async Task Several_images_need_Reference_to_choose_and_are_ImageReferenceAmbiguous_without()
    {
        TestImage first = TestImage.Create(layers: 1);
        TestImage second = TestImage.Create(layers: 1);
        OciDescriptor Entry(TestImage image, string tag) => new()
        {
            MediaType = image.ManifestMediaType,
            Digest = image.ManifestDigest,
            Size = image.ManifestJson.Length,
            Annotations = new Dictionary<string, string> { [RefName] = tag },
        };
        string layout = WriteLayout("two", null, [first, second], [Entry(first, "1"), Entry(second, "2")]);

        Assert.Equal("ImageReferenceAmbiguous", (await ImportFails(layout)).ErrorId);
        Assert.Equal("ImageReferenceAmbiguous", (await ImportFails(layout, "registry.example/app")).ErrorId);
        AssertCacheEmpty();

        SandboxImageInfo info = Assert.Single(await ImportAsync(layout, "registry.example/app:2"));
        Assert.Equal(second.ManifestDigest, info.Digest);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_tar_of_a_layout_imports_like_the_folder_gzip_or_not(bool gzip)
    {
        TestImage image = TestImage.Create(layers: 2, zstdTop: true);
        string tar = TarOf(WriteLayout("packed", "registry.example/app:tar", [image]), gzip);

        SandboxImageInfo info = Assert.Single(await ImportAsync(tar));

        Assert.Equal(image.ManifestDigest, info.Digest);
        Assert.All(image.Layers, layer => Assert.True(Cache.Contains(layer.Digest)));
        Assert.True(File.Exists(info.BasePath));
        Assert.Empty(Directory.GetFiles(Cache.IncomingDirectory));
    }

    [Fact]
    public async Task A_docker_save_archive_imports_its_plain_layers_under_its_RepoTags()
    {
        TestImage image = TestImage.Create(layers: 2);
        string tar = WriteDockerArchive("docker", image, "team/app:1", "team/app:latest");

        IReadOnlyList<SandboxImageInfo> infos = await ImportAsync(tar);

        Assert.Equal(["docker.io/team/app:1", "docker.io/team/app:latest"], infos.Select(i => i.Reference));
        ImageManifest manifest = ImageManifest.Parse(
            await Cache.ReadBlobAsync(infos[0].Digest, None), "test");
        Assert.Equal(image.Layers.Select(layer => layer.DiffId), manifest.Layers.Select(layer => layer.Digest));
        Assert.All(manifest.Layers, layer => Assert.Equal(ImageMediaTypes.OciLayer, layer.MediaType));
        Assert.True(File.Exists(infos[0].BasePath));
    }

    [Fact]
    public async Task A_docker_save_layer_that_is_not_its_diff_id_is_BlobDigestMismatch()
    {
        TestImage image = TestImage.Create(layers: 1);
        string tar = WriteDockerArchive("altered", image, "team/app:1");
        byte[] bytes = File.ReadAllBytes(tar);
        // A byte inside the layer's random file, which no other part of the archive holds.
        int at = bytes.AsSpan().IndexOf(image.Layers[0].Tar.AsSpan(8192, 64));
        bytes[at] ^= 0xff;
        File.WriteAllBytes(tar, bytes);

        SandboxException error = await ImportFails(tar);

        Assert.Equal("BlobDigestMismatch", error.ErrorId);
        AssertCacheEmpty();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_layer_that_matches_its_digest_but_does_not_unpack_leaves_nothing_behind(bool zstd)
    {
        TestImage good = TestImage.Create(layers: 1);
        // A gzip cut short around text that is no tar, or zstd frames that do not decompress.
        byte[] blob = zstd
            ? TestImage.CorruptZstd(good.Layers[0].Tar)
            : TestImage.Gzip(Encoding.UTF8.GetBytes("not a tar at all"))[..^4];
        var layer = new TestLayer(blob, [], zstd ? ImageMediaTypes.OciLayerZstd : ImageMediaTypes.OciLayerGzip);
        var manifest = good.Manifest with { Layers = [layer.Descriptor] };
        byte[] manifestJson = manifest.ToJson();
        string layout = WriteLayout("corrupt", null, [],
            [new OciDescriptor
            {
                MediaType = ImageMediaTypes.OciManifest,
                Digest = ContentDigest.Of(manifestJson),
                Size = manifestJson.Length,
                Annotations = new Dictionary<string, string> { [RefName] = "registry.example/app:bad" },
            }],
            layer.Blob, good.Config, manifestJson);

        SandboxException error = await ImportFails(layout);

        Assert.Equal("LayerCorrupt", error.ErrorId);
        AssertCacheEmpty();
    }
}
