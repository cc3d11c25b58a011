using Microsandbox.Engine;
using Microsandbox.Engine.Images.Cache;
using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.Tests.Images.Registry;

/// <summary>
/// Pulls through ImageStore, as Save-SandboxImage and New-Sandbox make them, from a real
/// distribution registry on loopback: a Docker manifest list resolved to the host's platform, and
/// two stores pulling one image into one home at the same time.
/// </summary>
public sealed class ImageStorePullTests : IClassFixture<OpenRegistryFixture>, IDisposable
{
    private readonly OpenRegistryFixture _registry;
    private readonly TempFolder _temp = new();
    private readonly SandboxHome _home;

    public ImageStorePullTests(OpenRegistryFixture registry)
    {
        _registry = registry;
        _home = new SandboxHome(Path.Join(_temp.Path, "home"));
    }

    public void Dispose() => _temp.Dispose();

    private string ImagesDirectory => Path.Join(_home.CacheDirectory, "images");

    [Fact]
    public async Task A_Docker_manifest_list_pulls_the_hosts_platform_entry()
    {
        string hostArchitecture = ImagePlatform.Host.Architecture;
        string otherArchitecture = hostArchitecture == "arm64" ? "amd64" : "arm64";
        TestImage host = TestImage.Create(hostArchitecture, layers: 2, docker: true);
        TestImage other = TestImage.Create(otherArchitecture, layers: 1, docker: true);
        string name = $"{_registry.Server.Host}/store/manifest-list:1";
        using var client = ClientFactory.Anonymous();

        // The other platform first, so that taking the first entry would take the wrong one.
        byte[] list = [];
        await _registry.Server.SetUpAsync("Pushing the manifest list", async () =>
            list = await TestImage.PushIndexAsync(client, ImageReference.Parse(name),
                ImageMediaTypes.DockerManifestList, other, host));
        SandboxImageInfo pulled = await new SandboxEngine(_home).Images.PullAsync(
            name, PullPolicy.IfMissing, null, null, Timing.Limit());

        Assert.Equal(host.ManifestDigest, pulled.Digest);
        Assert.Equal($"linux/{hostArchitecture}", pulled.Platform);
        Assert.Equal(host.Layers.Count, pulled.Layers);
        Assert.NotNull(pulled.BasePath);
        Assert.Equal(Path.Join(ImagesDirectory, ContentDigest.Hex(host.ManifestDigest) + ".erofs"),
            pulled.BasePath);
        LayerCache cache = LayerCache.ForHome(_home);
        CachedReference recorded = Assert.Single(cache.ListReferences());
        Assert.Equal(ImageReference.Parse(name).ToString(), recorded.Reference);
        Assert.Equal(host.ManifestDigest, recorded.ManifestDigest);
        Assert.Equal(ContentDigest.Of(list), recorded.IndexDigest);
        Assert.Equal(ImageMediaTypes.DockerManifestList,
            ImageIndex.Parse(File.ReadAllBytes(cache.BlobPath(ContentDigest.Of(list))), name).MediaType);
        Assert.All(host.Layers, layer => Assert.Equal(layer.Blob, File.ReadAllBytes(cache.BlobPath(layer.Digest))));
        Assert.Equal(host.Config, File.ReadAllBytes(cache.BlobPath(host.ConfigDigest)));
        Assert.False(cache.Contains(other.ManifestDigest));
        Assert.False(cache.Contains(other.ConfigDigest));
        Assert.All(other.Layers, layer => Assert.False(cache.Contains(layer.Digest)));
        Assert.Empty(Directory.GetFiles(cache.IncomingDirectory));
        Assert.Equal([pulled.BasePath], Directory.GetFiles(ImagesDirectory));
    }

    [Fact]
    public async Task Two_stores_pulling_one_image_into_one_home_at_once_share_one_copy_of_everything()
    {
        TestImage image = TestImage.Create(layers: 4, bytesPerLayer: 512 << 10);
        string name = $"{_registry.Server.Host}/store/concurrent:1";
        using (var client = ClientFactory.Anonymous())
        {
            await _registry.Server.SetUpAsync("Pushing the image",
                () => image.PushAsync(client, ImageReference.Parse(name)));
        }

        // Two engines on one home, as two sessions would have, pulling into an empty cache.
        ImageStore first = new SandboxEngine(_home).Images;
        ImageStore second = new SandboxEngine(_home).Images;
        SandboxImageInfo[] pulled = await Task.WhenAll(
            Task.Run(() => first.PullAsync(name, PullPolicy.Always, null, null, Timing.Limit())),
            Task.Run(() => second.PullAsync(name, PullPolicy.Always, null, null, Timing.Limit())));

        string basePath = Path.Join(ImagesDirectory, ContentDigest.Hex(image.ManifestDigest) + ".erofs");
        Assert.All(pulled, info =>
        {
            Assert.Equal(image.ManifestDigest, info.Digest);
            Assert.Equal(basePath, info.BasePath);
        });
        Assert.Equal(pulled[0].BaseSizeBytes, pulled[1].BaseSizeBytes);
        LayerCache cache = LayerCache.ForHome(_home);
        string[] expected =
        [
            .. image.Layers.Select(layer => layer.Digest), image.ConfigDigest, image.ManifestDigest,
        ];
        Assert.Equal(expected.Order(StringComparer.Ordinal), cache.ListBlobs().Order(StringComparer.Ordinal));
        Assert.Equal(
            expected.Select(digest => ContentDigest.Hex(digest)).Order(StringComparer.Ordinal),
            Directory.GetFileSystemEntries(cache.BlobsDirectory).Select(Path.GetFileName)
                .Order(StringComparer.Ordinal));
        Assert.All(image.Layers, layer => Assert.Equal(layer.Blob, File.ReadAllBytes(cache.BlobPath(layer.Digest))));
        Assert.Empty(Directory.GetFileSystemEntries(cache.IncomingDirectory));
        Assert.Equal([basePath], Directory.GetFileSystemEntries(ImagesDirectory));
        CachedReference recorded = Assert.Single(cache.ListReferences());
        Assert.Equal(image.ManifestDigest, recorded.ManifestDigest);
        Assert.Equal([recorded.Reference], new SandboxEngine(_home).Images.List().Select(i => i.Reference));
    }
}
