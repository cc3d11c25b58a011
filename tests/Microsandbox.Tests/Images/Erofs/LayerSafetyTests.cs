using System.Formats.Tar;
using Microsandbox.Engine;
using Microsandbox.Engine.Images.Erofs;
using Microsandbox.Engine.Images.Registry;
using Microsandbox.Tests.Images.Registry;
using BlobTar = Microsandbox.Engine.Images.Cache.LayerTar;

namespace Microsandbox.Tests.Images.Erofs;

/// <summary>Hostile and broken layers: each is refused with a stable error id and leaves no image.</summary>
public sealed class LayerSafetyTests : IDisposable
{
    private readonly ImageWorkspace _workspace = new();

    public void Dispose() => _workspace.Dispose();

    /// <summary>Builds into an empty folder, expects the failure, checks the folder stays empty.</summary>
    private async Task<SandboxException> AssertRefusedAsync(
        string errorId, object? target, params byte[][] layers)
    {
        string folder = _workspace.PathOf("out-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        string image = Path.Join(folder, "image.erofs");

        var streams = layers.Select(bytes => (Stream)new MemoryStream(bytes));
        var error = await Assert.ThrowsAsync<SandboxException>(() =>
            new ErofsImageBuilder().WriteFromLayersAsync(streams, image, null, CancellationToken.None));

        Assert.Equal(errorId, error.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidArgument, error.Kind);
        if (target is not null)
        {
            Assert.Equal(target, error.Target);
        }

        Assert.False(File.Exists(image));
        Assert.Empty(Directory.EnumerateFileSystemEntries(folder));
        return error;
    }

    [Theory]
    [InlineData("../evil")]
    [InlineData("a/../../evil")]
    [InlineData("/../evil")]
    [InlineData("./../../../../etc/passwd")]
    public async Task An_entry_climbing_out_of_the_root_is_refused(string name)
    {
        await AssertRefusedAsync(
            "LayerPathEscapes", name, new LayerTar().File("fine", "ok").File(name, "evil").ToArray());
    }

    [Fact]
    public async Task A_hard_link_to_outside_the_root_is_refused()
    {
        await AssertRefusedAsync("LayerPathEscapes", "innocent",
            new LayerTar().HardLink("innocent", "../../etc/shadow").ToArray());
    }

    [Fact]
    public async Task An_entry_under_a_symlink_of_the_same_layer_is_refused()
    {
        await AssertRefusedAsync("LayerPathThroughSymlink", "lnk/passwd",
            new LayerTar().Symlink("lnk", "/etc").File("lnk/passwd", "root::0:0").ToArray());
    }

    [Fact]
    public async Task An_entry_under_a_symlink_of_a_lower_layer_is_refused()
    {
        await AssertRefusedAsync("LayerPathThroughSymlink", "lnk/deeper/file",
            new LayerTar().Directory("real/").Symlink("lnk", "real").ToArray(),
            new LayerTar().File("lnk/deeper/file", "x").ToArray());
    }

    [Fact]
    public async Task A_whiteout_under_a_symlink_is_refused()
    {
        await AssertRefusedAsync("LayerPathThroughSymlink", "lnk/.wh.passwd",
            new LayerTar().Directory("etc/").File("etc/passwd", "x").Symlink("lnk", "etc").ToArray(),
            new LayerTar().Marker("lnk/.wh.passwd").ToArray());
    }

    [Fact]
    public async Task A_hard_link_through_a_symlink_is_refused()
    {
        await AssertRefusedAsync("LayerPathThroughSymlink", "h",
            new LayerTar().Directory("etc/").File("etc/shadow", "x").Symlink("lnk", "etc").ToArray(),
            new LayerTar().HardLink("h", "lnk/shadow").ToArray());
    }

    [Fact]
    public async Task Broken_links_and_parents_are_refused_with_their_own_ids()
    {
        await AssertRefusedAsync(
            "LayerLinkTargetMissing", "h", new LayerTar().HardLink("h", "nothing").ToArray());
        await AssertRefusedAsync("LayerLinkTargetIsDirectory", "h",
            new LayerTar().Directory("d/").HardLink("h", "d").ToArray());
        await AssertRefusedAsync("LayerParentNotDirectory", "f/child",
            new LayerTar().File("f", "file").File("f/child", "x").ToArray());
        await AssertRefusedAsync(
            "LayerNameTooLong", null, new LayerTar().File(new string('n', 256), "x").ToArray());
    }

    [Fact]
    public async Task A_pax_sparse_file_is_refused_rather_than_stored_as_its_map()
    {
        using var stream = new MemoryStream();
        using (var writer = new TarWriter(stream, leaveOpen: true))
        {
            var attributes = new Dictionary<string, string>(StringComparer.Ordinal)
            {
                ["GNU.sparse.major"] = "1",
                ["GNU.sparse.minor"] = "0",
                ["GNU.sparse.realsize"] = "1048576",
            };
            writer.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, "holes", attributes)
            {
                DataStream = new MemoryStream("1\n0\n1\n"u8.ToArray()),
            });
        }

        await AssertRefusedAsync("LayerEntryUnsupported", "holes", stream.ToArray());
    }

    [Fact]
    public async Task A_tar_cut_inside_a_file_is_corrupt()
    {
        byte[] tar = new LayerTar(TarEntryFormat.Ustar).File("big", new byte[10_000]).ToArray();

        var error = await AssertRefusedAsync("LayerCorrupt", null, tar[..(512 + 5000)]);

        Assert.Contains("big", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_tar_cut_inside_a_header_is_corrupt()
    {
        byte[] tar = new LayerTar().File("a", "x").File("b", "y").ToArray();

        await AssertRefusedAsync("LayerCorrupt", "layer 1", tar[..700]);
    }

    [Fact]
    public async Task Bytes_that_are_not_a_tar_are_corrupt()
    {
        byte[] garbage = new byte[4096];
        new Random(7).NextBytes(garbage);

        await AssertRefusedAsync("LayerCorrupt", "layer 2", new LayerTar().File("a", "x").ToArray(), garbage);
    }

    [Fact]
    public async Task A_zstd_layer_with_broken_frames_is_corrupt()
    {
        byte[] zstd = TestImage.CorruptZstd(new LayerTar().File("a", new string('x', 5000)).ToArray());
        string folder = _workspace.PathOf("zstd");
        Directory.CreateDirectory(folder);
        string image = Path.Join(folder, "image.erofs");
        Stream tar = BlobTar.Open(new MemoryStream(zstd), ImageMediaTypes.OciLayerZstd);

        var error = await Assert.ThrowsAsync<SandboxException>(() =>
            new ErofsImageBuilder().WriteFromLayersAsync([tar], image, null, CancellationToken.None));

        Assert.Equal("LayerCorrupt", error.ErrorId);
        Assert.Equal("layer 1", error.Target);
        Assert.Empty(Directory.EnumerateFileSystemEntries(folder));
    }

    [Fact]
    public async Task A_failed_build_keeps_the_previous_image()
    {
        string image = _workspace.PathOf("kept.erofs");
        await File.WriteAllTextAsync(image, "the previous image");

        await Assert.ThrowsAsync<SandboxException>(() => new ErofsImageBuilder().WriteFromLayersAsync(
            [new LayerTar().File("../evil", "x").ToStream()], image, null, CancellationToken.None));

        Assert.Equal("the previous image", await File.ReadAllTextAsync(image));
        Assert.Equal([image], Directory.EnumerateFileSystemEntries(_workspace.Root));
    }
}
