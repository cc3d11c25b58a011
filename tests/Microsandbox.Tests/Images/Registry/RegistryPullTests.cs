using System.Formats.Tar;
using System.Net;
using Microsandbox.Engine;
using Microsandbox.Engine.Images.Cache;
using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.Tests.Images.Registry;

/// <summary>Pulls from a real distribution registry on loopback, through our own client.</summary>
public sealed class RegistryPullTests : IClassFixture<OpenRegistryFixture>, IDisposable
{
    private readonly OpenRegistryFixture _registry;
    private readonly TempFolder _temp = new();

    public RegistryPullTests(OpenRegistryFixture registry) => _registry = registry;

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Ping_finds_a_live_registry_over_plain_http_on_loopback()
    {
        var handler = new RecordingHandler();
        using var client = ClientFactory.Anonymous(handler);

        await client.PingAsync(_registry.Server.Host, Timing.Limit());

        RecordedRequest ping = Assert.Single(handler.Requests);
        Assert.Equal($"http://{_registry.Server.Host}/v2/", ping.Uri.ToString());
        Assert.Equal(HttpStatusCode.OK, ping.Status);
    }

    [Theory]
    [InlineData("linux/amd64")]
    [InlineData("linux/arm64")]
    public async Task Pull_of_an_index_takes_the_platform_manifest_and_verified_layers(string platform)
    {
        TestImage expected = platform.EndsWith("amd64", StringComparison.Ordinal)
            ? _registry.Amd64
            : _registry.Arm64;
        LayerCache cache = _temp.NewCache();
        var progress = new ProgressLog();
        using var client = ClientFactory.Anonymous();

        PulledImage image = await client.PullAsync(_registry.MultiPlatform, cache,
            ImagePlatform.Parse(platform), progress, Timing.Limit());

        Assert.Equal(expected.ManifestDigest, image.ManifestDigest);
        Assert.Equal(ContentDigest.Of(_registry.IndexJson), image.IndexDigest);
        Assert.Equal(platform, image.Platform.ToString());
        Assert.Equal(expected.Layers.Select(l => l.Digest), image.Manifest.Layers.Select(l => l.Digest));
        foreach (TestLayer layer in expected.Layers)
        {
            Assert.Equal(layer.Blob, File.ReadAllBytes(cache.BlobPath(layer.Digest)));
            Assert.Equal(new LayerProgress(layer.Digest, layer.Blob.Length, layer.Blob.Length),
                progress.Last(layer.Digest));
        }

        Assert.Equal(expected.Config, File.ReadAllBytes(cache.BlobPath(expected.ConfigDigest)));
        Assert.Equal(expected.ManifestJson, File.ReadAllBytes(cache.BlobPath(expected.ManifestDigest)));
        Assert.True(cache.Contains(ContentDigest.Of(_registry.IndexJson)));
        Assert.Equal(expected.Architecture, image.Config.Architecture);
        Assert.Equal(["PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=hello"], image.Config.Env);
        Assert.Equal("/srv/app", image.Config.WorkingDir);
        Assert.Equal("1000:1000", image.Config.User);
        Assert.Equal(["/bin/sh", "-c"], image.Config.Entrypoint);
        Assert.Equal(["echo hello"], image.Config.Cmd);
        Assert.Equal("sandbox", image.Config.Labels["org.example.team"]);
        Assert.Equal(expected.Layers.Select(l => l.DiffId), image.Config.DiffIds);

        CachedReference recorded = Assert.Single(cache.ListReferences());
        Assert.Equal(_registry.MultiPlatform.ToString(), recorded.Reference);
        Assert.Equal(expected.ManifestDigest, recorded.ManifestDigest);
        Assert.Empty(Directory.GetFiles(cache.IncomingDirectory));

        PulledImage? loaded = await PulledImage.LoadAsync(cache, _registry.MultiPlatform, Timing.Limit());
        Assert.NotNull(loaded);
        Assert.Equal(image.ManifestDigest, loaded.ManifestDigest);
        Assert.Equal(image.Config.Env, loaded.Config.Env);
        Assert.Equal(image.Config.User, loaded.Config.User);
        Assert.Equal(image.Manifest.Layers, loaded.Manifest.Layers);
    }

    [Fact]
    public async Task Cached_layers_open_as_their_tar_whether_gzip_or_zstd()
    {
        LayerCache cache = _temp.NewCache();
        using var client = ClientFactory.Anonymous();

        PulledImage image = await client.PullAsync(_registry.MultiPlatform, cache,
            ImagePlatform.Parse("linux/amd64"), null, Timing.Limit());

        Assert.Equal(ImageMediaTypes.OciLayerZstd, image.Manifest.Layers[^1].MediaType);
        foreach (var (descriptor, layer) in image.Manifest.Layers.Zip(_registry.Amd64.Layers))
        {
            using Stream tar = LayerTar.Open(cache, descriptor.Digest, descriptor.MediaType);
            using var copy = new MemoryStream();
            tar.CopyTo(copy);
            Assert.Equal(layer.Tar, copy.ToArray());

            copy.Position = 0;
            using var reader = new TarReader(copy);
            Assert.StartsWith("etc/layer-", reader.GetNextEntry()!.Name, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Docker_schema_2_manifests_pull_by_tag()
    {
        TestImage docker = TestImage.Create(docker: true, layers: 2);
        ImageReference reference = ImageReference.Parse($"{_registry.Server.Host}/test/docker-format:v2");
        LayerCache cache = _temp.NewCache();
        using var client = ClientFactory.Anonymous();
        await docker.PushAsync(client, reference);

        PulledImage image = await client.PullAsync(reference, cache, null, null, Timing.Limit());

        Assert.Equal(docker.ManifestDigest, image.ManifestDigest);
        Assert.Null(image.IndexDigest);
        Assert.Equal(ImageMediaTypes.DockerManifest, image.Manifest.MediaType);
        Assert.All(docker.Layers, layer => Assert.True(cache.Contains(layer.Digest)));
    }

    [Fact]
    public async Task An_index_without_the_platform_is_ImagePlatformNotFound_and_caches_nothing()
    {
        LayerCache cache = _temp.NewCache();
        using var client = ClientFactory.Anonymous();

        var error = await Assert.ThrowsAsync<SandboxException>(() => client.PullAsync(_registry.MultiPlatform,
            cache, ImagePlatform.Parse("linux/riscv64"), null, Timing.Limit()));

        Assert.Equal("ImagePlatformNotFound", error.ErrorId);
        Assert.Equal(SandboxErrorKind.NotFound, error.Kind);
        Assert.Equal(_registry.MultiPlatform.ToString(), error.Target);
        Assert.Contains("linux/amd64", error.Message, StringComparison.Ordinal);
        AssertNothingCached(cache);
    }

    [Theory]
    [InlineData("test/multi:no-such-tag")]
    [InlineData("test/no-such-repository:1.0")]
    public async Task An_unknown_tag_or_repository_is_ImageNotFound(string name)
    {
        ImageReference reference = ImageReference.Parse($"{_registry.Server.Host}/{name}");
        LayerCache cache = _temp.NewCache();
        using var client = ClientFactory.Anonymous();

        var error = await Assert.ThrowsAsync<SandboxException>(() =>
            client.PullAsync(reference, cache, null, null, Timing.Limit()));

        Assert.Equal("ImageNotFound", error.ErrorId);
        Assert.Equal(SandboxErrorKind.NotFound, error.Kind);
        Assert.Equal(reference.ToString(), error.Target);
        AssertNothingCached(cache);
    }

    [Fact]
    public async Task A_closed_port_is_RegistryUnreachable()
    {
        int closed = RegistryServer.FreePort();
        ImageReference reference = ImageReference.Parse($"127.0.0.1:{closed}/test/multi:1.0");
        LayerCache cache = _temp.NewCache();
        using var client = ClientFactory.Anonymous();

        var error = await Assert.ThrowsAsync<SandboxException>(() =>
            client.PullAsync(reference, cache, null, null, Timing.Limit()));

        Assert.Equal("RegistryUnreachable", error.ErrorId);
        Assert.Equal(SandboxErrorKind.ResourceUnavailable, error.Kind);
        Assert.Equal(reference.ToString(), error.Target);
        AssertNothingCached(cache);
    }

    [Fact]
    public async Task A_layer_altered_in_the_registry_is_BlobDigestMismatch_and_nothing_of_it_is_cached()
    {
        TestImage image = TestImage.Create(layers: 2);
        ImageReference reference = ImageReference.Parse($"{_registry.Server.Host}/test/tampered-layer:1");
        using var client = ClientFactory.Anonymous();
        await image.PushAsync(client, reference);
        TestLayer victim = image.Layers[1];
        byte[] altered = (byte[])victim.Blob.Clone();
        altered[altered.Length / 2] ^= 0xff;
        File.WriteAllBytes(_registry.Server.BlobDataPath(victim.Digest), altered);
        LayerCache cache = _temp.NewCache();

        var error = await Assert.ThrowsAsync<SandboxException>(() =>
            client.PullAsync(reference, cache, null, null, Timing.Limit()));

        Assert.Equal("BlobDigestMismatch", error.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidResult, error.Kind);
        Assert.False(cache.Contains(victim.Digest));
        Assert.False(cache.Contains(image.ManifestDigest));
        Assert.False(cache.Contains(image.ConfigDigest));
        Assert.Empty(cache.ListReferences());
        Assert.False(File.Exists(Path.Join(cache.IncomingDirectory, $"sha256-{victim.Digest[7..]}.partial")));
        Assert.Empty(Directory.GetFiles(cache.IncomingDirectory, "*.tmp"));

        // The other layer, cancelled or finished, is whole and verified or a resumable partial.
        TestLayer sound = image.Layers[0];
        Assert.True(!cache.Contains(sound.Digest)
            || sound.Blob.SequenceEqual(File.ReadAllBytes(cache.BlobPath(sound.Digest))));
    }

    [Fact]
    public async Task A_manifest_altered_in_the_registry_is_BlobDigestMismatch_and_nothing_is_cached()
    {
        TestImage image = TestImage.Create(layers: 1);
        ImageReference reference = ImageReference.Parse($"{_registry.Server.Host}/test/tampered-manifest:1");
        using var client = ClientFactory.Anonymous();
        await image.PushAsync(client, reference);

        // Still a valid manifest, so the registry serves it: only its digest gives it away.
        string altered = System.Text.Encoding.UTF8.GetString(image.ManifestJson)
            .Replace("\"schemaVersion\":2", "\"schemaVersion\": 2", StringComparison.Ordinal);
        File.WriteAllText(_registry.Server.BlobDataPath(image.ManifestDigest), altered);
        LayerCache cache = _temp.NewCache();

        var error = await Assert.ThrowsAsync<SandboxException>(() =>
            client.PullAsync(reference, cache, null, null, Timing.Limit()));

        Assert.Equal("BlobDigestMismatch", error.ErrorId);
        Assert.Equal(reference.ToString(), error.Target);
        AssertNothingCached(cache);
    }

    [Fact]
    public async Task A_partial_download_resumes_with_a_range_request()
    {
        TestImage image = TestImage.Create(layers: 1, bytesPerLayer: 1 << 20);
        ImageReference reference = ImageReference.Parse($"{_registry.Server.Host}/test/resume:1");
        TestLayer layer = image.Layers[0];
        var handler = new RecordingHandler();
        using var client = ClientFactory.Anonymous(handler);
        await image.PushAsync(client, reference);
        LayerCache cache = _temp.NewCache();
        int half = layer.Blob.Length / 2;
        string partial = Path.Join(cache.IncomingDirectory, $"sha256-{layer.Digest[7..]}.partial");
        File.WriteAllBytes(partial, layer.Blob[..half]);
        var progress = new ProgressLog();

        await client.DownloadBlobAsync(reference, layer.Descriptor, cache, progress, Timing.Limit());

        RecordedRequest get = Assert.Single(handler.Requests, r => r.Method == "GET"
            && r.Uri.AbsolutePath.Contains("/blobs/", StringComparison.Ordinal));
        Assert.Equal($"bytes={half}-", get.Range);
        Assert.Equal(HttpStatusCode.PartialContent, get.Status);
        Assert.Equal(layer.Blob, File.ReadAllBytes(cache.BlobPath(layer.Digest)));
        Assert.False(File.Exists(partial));
        Assert.Equal(half, progress.First(layer.Digest)!.BytesDone);
        Assert.Equal(layer.Blob.Length, progress.Last(layer.Digest)!.BytesDone);
    }

    [Fact]
    public async Task A_partial_download_of_foreign_bytes_is_started_over_once()
    {
        TestImage image = TestImage.Create(layers: 1, bytesPerLayer: 256 << 10);
        ImageReference reference = ImageReference.Parse($"{_registry.Server.Host}/test/resume-foreign:1");
        TestLayer layer = image.Layers[0];
        var handler = new RecordingHandler();
        using var client = ClientFactory.Anonymous(handler);
        await image.PushAsync(client, reference);
        LayerCache cache = _temp.NewCache();
        string partial = Path.Join(cache.IncomingDirectory, $"sha256-{layer.Digest[7..]}.partial");
        File.WriteAllBytes(partial, new byte[layer.Blob.Length / 3]);

        await client.DownloadBlobAsync(reference, layer.Descriptor, cache, null, Timing.Limit());

        var gets = handler.Requests.Where(r => r.Method == "GET" && r.Uri.AbsolutePath.Contains("/blobs/",
            StringComparison.Ordinal)).ToList();
        Assert.Equal(2, gets.Count);
        Assert.NotNull(gets[0].Range);
        Assert.Null(gets[1].Range);
        Assert.Equal(layer.Blob, File.ReadAllBytes(cache.BlobPath(layer.Digest)));
    }

    [Fact]
    public async Task Two_concurrent_pulls_of_one_image_into_one_cache_both_succeed()
    {
        TestImage image = TestImage.Create(layers: 4, bytesPerLayer: 512 << 10);
        ImageReference reference = ImageReference.Parse($"{_registry.Server.Host}/test/concurrent:1");
        using (var pusher = ClientFactory.Anonymous())
        {
            await image.PushAsync(pusher, reference);
        }

        // Two cache instances and two clients: as two sessions would each have their own.
        string root = Path.Join(_temp.Path, "shared");
        using var first = ClientFactory.Anonymous();
        using var second = ClientFactory.Anonymous();
        Task<PulledImage>[] pulls =
        [
            Task.Run(() => first.PullAsync(reference, new LayerCache(root), null, null, Timing.Limit())),
            Task.Run(() => second.PullAsync(reference, new LayerCache(root), null, null, Timing.Limit())),
        ];
        PulledImage[] pulled = await Task.WhenAll(pulls);

        Assert.All(pulled, p => Assert.Equal(image.ManifestDigest, p.ManifestDigest));
        var cache = new LayerCache(root);
        foreach (TestLayer layer in image.Layers)
        {
            Assert.Equal(layer.Blob, File.ReadAllBytes(cache.BlobPath(layer.Digest)));
        }

        Assert.Empty(Directory.GetFiles(cache.IncomingDirectory));
        Assert.Equal(image.ManifestDigest, cache.FindReference(reference.ToString())!.ManifestDigest);
    }

    [Fact]
    public async Task Pulling_a_platform_manifest_by_digest_verifies_it()
    {
        ImageReference pinned = _registry.MultiPlatform.WithDigest(_registry.Arm64.ManifestDigest);
        using var client = ClientFactory.Anonymous();

        ResolvedImage resolved = await client.ResolveAsync(pinned, ImagePlatform.Parse("linux/arm64"),
            Timing.Limit());

        Assert.Null(resolved.Index);
        Assert.Equal(_registry.Arm64.ManifestDigest, resolved.ManifestDocument.Digest);
        Assert.Equal(_registry.Arm64.ManifestJson, resolved.ManifestDocument.Content.ToArray());
    }

    [Fact]
    public async Task A_single_platform_image_for_another_architecture_is_ImagePlatformNotFound()
    {
        ImageReference pinned = _registry.MultiPlatform.WithDigest(_registry.Arm64.ManifestDigest);
        LayerCache cache = _temp.NewCache();
        using var client = ClientFactory.Anonymous();

        var error = await Assert.ThrowsAsync<SandboxException>(() =>
            client.PullAsync(pinned, cache, ImagePlatform.Parse("linux/amd64"), null, Timing.Limit()));

        Assert.Equal("ImagePlatformNotFound", error.ErrorId);
        AssertNothingCached(cache);
    }

    private static void AssertNothingCached(LayerCache cache)
    {
        Assert.Empty(cache.ListBlobs());
        Assert.Empty(cache.ListReferences());
        Assert.Empty(Directory.GetFiles(cache.IncomingDirectory, "*.partial"));
        Assert.Empty(Directory.GetFiles(cache.IncomingDirectory, "*.tmp"));
    }
}
