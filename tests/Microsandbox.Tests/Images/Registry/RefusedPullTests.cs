using Microsandbox.Engine;
using Microsandbox.Engine.Images.Cache;
using Microsandbox.Engine.Images.Registry;
using LayerTar = Microsandbox.Tests.Images.Erofs.LayerTar;

namespace Microsandbox.Tests.Images.Registry;

/// <summary>
/// Pulls through ImageStore of images whose layers match their digests but do not unpack: each is
/// refused with its id while the base is built, and the cache is left as it was before the pull.
/// </summary>
public sealed class RefusedPullTests : IClassFixture<OpenRegistryFixture>, IDisposable
{
    private readonly OpenRegistryFixture _registry;
    private readonly TempFolder _temp = new();
    private readonly SandboxHome _home;
    private readonly ImageStore _images;

    public RefusedPullTests(OpenRegistryFixture registry)
    {
        _registry = registry;
        _home = new SandboxHome(Path.Join(_temp.Path, "home"));
        _images = new SandboxEngine(_home).Images;
    }

    public void Dispose() => _temp.Dispose();

    public static TheoryData<string, string> Refusals => new()
    {
        { "escape", "LayerPathEscapes" },
        { "absolute", "LayerPathEscapes" },
        { "not-a-tar", "LayerCorrupt" },
        { "through-symlink", "LayerPathThroughSymlink" },
        { "tar-cut-in-file-data", "LayerCorrupt" },
        { "plain-tar-cut-in-file-data", "LayerCorrupt" },
        { "gzip-cut-in-half", "LayerCorrupt" },
        { "gzip-crc-wrong", "LayerCorrupt" },
        { "diff-id-disagrees", "LayerCorrupt" },
    };

    private static byte[] TarOf(string kind)
    {
        byte[] garbage = new byte[4096];
        new Random(11).NextBytes(garbage);
        return kind switch
        {
            "escape" => new LayerTar().File("fine", "ok").File("../evil", "evil").ToArray(),
            "absolute" => new LayerTar().File("fine", "ok").File("/etc/evil", "evil").ToArray(),
            "not-a-tar" => garbage,
            "through-symlink" => new LayerTar().Symlink("lnk", "/etc").File("lnk/passwd", "x").ToArray(),
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
    }

    /// <summary>
    /// A tar whose last file has 8 KiB of random data, so that neither gzip shrinks it nor a cut
    /// in its middle lands on an entry boundary.
    /// </summary>
    private static byte[] TarWithBigFile()
    {
        byte[] data = new byte[8192];
        new Random(13).NextBytes(data);
        return new LayerTar().File("fine", "ok").File("big", data).ToArray();
    }

    /// <summary>The bad layer as pushed: the blob matches its digest, whatever is wrong inside it.</summary>
    private static TestLayer LayerOf(string kind)
    {
        byte[] whole = TarWithBigFile();

        // Half of big's data: the end-of-archive blocks (1 KiB) and the last 4 KiB of it go.
        byte[] cut = whole[..(whole.Length - 1024 - 4096)];
        byte[] gzip = TestImage.Gzip(whole);

        // The trailer is CRC-32 then length, 4 bytes each: the tar inflates whole, its CRC is wrong.
        byte[] wrongCrc = (byte[])gzip.Clone();
        wrongCrc[^8] ^= 0xff;
        return kind switch
        {
            "tar-cut-in-file-data" => new TestLayer(TestImage.Gzip(cut), cut, ImageMediaTypes.OciLayerGzip),
            "plain-tar-cut-in-file-data" => new TestLayer(cut, cut, ImageMediaTypes.OciLayer),

            // The gzip header and half the deflate stream; no end, no trailer.
            "gzip-cut-in-half" => new TestLayer(gzip[..(gzip.Length / 2)], whole, ImageMediaTypes.OciLayerGzip),
            "gzip-crc-wrong" => new TestLayer(wrongCrc, whole, ImageMediaTypes.OciLayerGzip),

            // A sound layer, but the config's diff_id names another tar.
            "diff-id-disagrees" => new TestLayer(gzip, new LayerTar().File("fine", "other").ToArray(),
                ImageMediaTypes.OciLayerGzip),
            _ => new TestLayer(TestImage.Gzip(TarOf(kind)), TarOf(kind), ImageMediaTypes.OciLayerGzip),
        };
    }

    [Theory]
    [MemberData(nameof(Refusals))]
    public async Task A_pull_whose_layer_does_not_unpack_is_refused_and_leaves_the_cache_as_it_was(
        string kind, string errorId)
    {
        using var client = ClientFactory.Anonymous();
        string host = _registry.Server.Host;
        TestImage good = TestImage.Create(layers: 1);
        string goodName = $"{host}/refused/{kind}-good:1";
        await _registry.Server.SetUpAsync("Pushing the good image",
            () => good.PushAsync(client, ImageReference.Parse(goodName)));
        await _images.PullAsync(goodName, PullPolicy.IfMissing, null, null, Timing.Limit());
        LayerCache cache = LayerCache.ForHome(_home);
        IReadOnlyList<string> blobs = cache.ListBlobs();
        string[] bases = Directory.GetFiles(Path.Join(_home.CacheDirectory, "images"));

        // The good image's layer and config under the bad layer: those stay, as the good image has them.
        TestLayer bad = LayerOf(kind);
        TestImage refused = good.WithLayers(good.Layers[0], bad);
        string name = $"{host}/refused/{kind}:1";
        await _registry.Server.SetUpAsync("Pushing the refused image",
            () => refused.PushAsync(client, ImageReference.Parse(name)));

        foreach (PullPolicy policy in new[] { PullPolicy.IfMissing, PullPolicy.Always })
        {
            SandboxException error = await Assert.ThrowsAsync<SandboxException>(
                () => _images.PullAsync(name, policy, null, null, Timing.Limit()));
            Assert.Equal(errorId, error.ErrorId);
        }

        Assert.Null(cache.FindReference(name));
        Assert.Equal([goodName], _images.List().Select(image => image.Reference));
        Assert.Equal(blobs, cache.ListBlobs());
        Assert.False(cache.Contains(bad.Digest));
        Assert.Equal(bases, Directory.GetFiles(Path.Join(_home.CacheDirectory, "images")));
        Assert.Empty(Directory.GetFiles(cache.IncomingDirectory));
        SandboxException never = await Assert.ThrowsAsync<SandboxException>(
            () => _images.PullAsync(name, PullPolicy.Never, null, null, Timing.Limit()));
        Assert.Equal("ImageNotFound", never.ErrorId);
    }

    [Fact]
    public async Task A_refused_pull_under_Always_keeps_the_image_the_tag_named_before()
    {
        using var client = ClientFactory.Anonymous();
        TestImage good = TestImage.Create(layers: 1);
        string name = $"{_registry.Server.Host}/refused/moved:1";
        await good.PushAsync(client, ImageReference.Parse(name));
        SandboxImageInfo before = await _images.PullAsync(name, PullPolicy.IfMissing, null, null, Timing.Limit());

        byte[] tar = TarOf("escape");
        TestImage moved = good.WithLayers(new TestLayer(TestImage.Gzip(tar), tar, ImageMediaTypes.OciLayerGzip));
        await moved.PushAsync(client, ImageReference.Parse(name));
        SandboxException error = await Assert.ThrowsAsync<SandboxException>(
            () => _images.PullAsync(name, PullPolicy.Always, null, null, Timing.Limit()));

        Assert.Equal("LayerPathEscapes", error.ErrorId);
        SandboxImageInfo after = Assert.Single(_images.List());
        Assert.Equal(before.Digest, after.Digest);
        Assert.True(File.Exists(after.BasePath));
        Assert.Equal(good.Layers.Count + 2, LayerCache.ForHome(_home).ListBlobs().Count);
    }
}
