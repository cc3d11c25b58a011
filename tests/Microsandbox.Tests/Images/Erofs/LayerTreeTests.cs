using System.Formats.Tar;
using Microsandbox.Engine;
using Microsandbox.Engine.Images.Erofs;

namespace Microsandbox.Tests.Images.Erofs;

/// <summary>Layers in order: whiteouts, opaque directories, type changes and links across layers.</summary>
public sealed class LayerTreeTests : IDisposable
{
    private readonly ImageWorkspace _workspace = new();

    public void Dispose() => _workspace.Dispose();

    [Fact]
    public async Task Three_layers_apply_whiteouts_opaque_directories_and_type_changes()
    {
        var bottom = new LayerTar()
            .Directory("etc/").File("etc/a", "a from layer 1").File("etc/b", "b from layer 1")
            .Directory("etc/sub/").File("etc/sub/c", "c from layer 1")
            .Directory("opt/").Directory("opt/x/").File("opt/x/y", "hidden by opaque")
            .File("opt/old", "hidden too")
            .Directory("var/").Directory("var/lib/").File("var/lib/state", "whited out with var")
            .Directory("usr/").Directory("usr/bin/").File("usr/bin/tool", "a file that becomes a directory")
            .Directory("data/").File("data/inner", "a directory that becomes a file")
            .HardLink("hl", "etc/a");
        var middle = new LayerTar()
            .Marker("etc/.wh.a")
            .Marker("opt/.wh..wh..opq")
            .File("opt/new", "added beside the opaque marker")
            .Directory("usr/bin/tool/")
            .File("usr/bin/tool/inside", "inside the new directory")
            .File("data", "now a file")
            .Directory("etc/sub/", mode: "700")
            // A whiteout hides lower layers only: this layer's own file stays, whatever the order.
            .File("same", "kept despite the later whiteout")
            .Marker(".wh.same");
        var top = new LayerTar()
            .Marker(".wh.var")
            .File("etc/a", "a again in layer 3")
            .Marker("opt/.wh.new")
            .File("opt/new2", "layer 3")
            .Marker("ghost/.wh..wh..opq")
            .HardLink("hl2", "hl")
            .Marker(".wh..wh.plnk");

        string image = await _workspace.BuildAsync(bottom, middle, top);

        var expected = new Dictionary<string, ExpectedNode>(StringComparer.Ordinal);
        foreach (string path in new[] { "etc", "etc/b", "etc/sub/c", "opt", "usr", "usr/bin", "hl" })
        {
            expected[path] = bottom.Expected[path];
        }

        foreach (string path in new[] { "usr/bin/tool", "usr/bin/tool/inside", "data", "etc/sub", "same" })
        {
            expected[path] = middle.Expected[path];
        }

        expected["etc/a"] = top.Expected["etc/a"];
        expected["opt/new2"] = top.Expected["opt/new2"];
        // The original etc/a lives on through its links, now two of them.
        expected["hl2"] = bottom.Expected["hl"];
        // A marker's directory exists even with no entry of its own; it takes the root's attributes.
        expected["ghost"] = new ExpectedNode(ExpectedKind.Directory, "755", 0, 0, DateTimeOffset.UnixEpoch);
        _workspace.Verify(image, expected);
    }

    [Fact]
    public async Task A_directory_over_a_directory_merges_and_takes_the_new_attributes()
    {
        using var tree = new LayerTree(_workspace.Root);
        var later = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var first = new LayerTar().Directory("d/", mode: "755").File("d/f", "f");
        var second = new LayerTar().Directory("d/", mode: "1777", uid: 5, gid: 6, time: later);

        await tree.ApplyLayerAsync(first.ToStream(), null, default);
        await tree.ApplyLayerAsync(second.ToStream(), null, default);


        var directory = tree.Root.Entries!["d"];
        Assert.Equal((UnixFileMode)Convert.ToInt32("1777", 8), directory.Permissions);
        Assert.Equal((5u, 6u), (directory.Uid, directory.Gid));
        Assert.Equal(later, directory.ModificationTime);
        Assert.True(directory.Entries!.ContainsKey("f"));
        Assert.Equal(2, tree.LayerCount);
    }

    [Fact]
    public async Task Dotted_names_land_under_the_root_and_symlinks_may_point_at_absolute_paths()
    {
        using var tree = new LayerTree(_workspace.Root);
        var layer = new LayerTar(TarEntryFormat.Pax)
            .File("./dot/./file", "dotted")
            .File("x/../resolved", "dot-dot inside the root")
            .Symlink("./lnk", "/etc/passwd");

        await tree.ApplyLayerAsync(layer.ToStream(), null, default);

        Assert.True(tree.Root.Entries!["dot"].Entries!.ContainsKey("file"));
        Assert.True(tree.Root.Entries.ContainsKey("resolved"));
        Assert.Equal("/etc/passwd", tree.Root.Entries["lnk"].LinkTarget);
    }

    [Theory]
    [InlineData("/etc/x", null)]
    [InlineData("//etc/x", null)]
    [InlineData("/", null)]
    [InlineData("h", "/etc/x")]
    public async Task Absolute_names_and_hard_link_targets_are_refused_as_escaping_the_root(
        string name, string? hardLinkTarget)
    {
        using var tree = new LayerTree(_workspace.Root);
        var layer = new LayerTar(TarEntryFormat.Pax).Directory("etc/").File("etc/x", "inside");
        layer = hardLinkTarget is null ? layer.File(name, "absolute") : layer.HardLink(name, hardLinkTarget);

        var error = await Assert.ThrowsAsync<SandboxException>(
            () => tree.ApplyLayerAsync(layer.ToStream(), null, default));

        Assert.Equal("LayerPathEscapes", error.ErrorId);
        Assert.Equal(name, error.Target);
        Assert.Contains("absolute path", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Xattrs_outside_the_erofs_namespaces_are_reported_not_silently_lost()
    {
        using var tree = new LayerTree(_workspace.Root);
        var xattrs = new Dictionary<string, byte[]>(StringComparer.Ordinal)
        {
            ["system.nfs4_acl"] = [1, 2, 3],
            ["user.kept"] = "yes"u8.ToArray(),
        };
        var layer = new LayerTar().File("f", "x"u8.ToArray(), xattrs: xattrs);

        await tree.ApplyLayerAsync(layer.ToStream(), null, default);

        Assert.Equal(["f: system.nfs4_acl"], tree.DroppedXattrs);
        Assert.Equal(["user.kept"], tree.Root.Entries!["f"].Xattrs.Keys);
    }
}
