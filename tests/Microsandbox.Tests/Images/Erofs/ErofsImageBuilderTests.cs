using System.Buffers.Binary;
using Microsandbox.Engine;
using Microsandbox.Engine.Images.Erofs;

namespace Microsandbox.Tests.Images.Erofs;

/// <summary>Trees built in code: what tar cannot carry, the writer's refusals, atomic output.</summary>
public sealed class ErofsImageBuilderTests : IDisposable
{
    private static readonly UnixFileMode Mode644 = (UnixFileMode)Convert.ToInt32("644", 8);
    private readonly ImageWorkspace _workspace = new();

    public void Dispose() => _workspace.Dispose();

    private static async Task<Inode> AddFileAsync(LayerTree tree, Inode directory, string name, byte[] data)
    {
        var (range, _) = await tree.Spool.AppendAsync(
            new MemoryStream(data), data.Length, CancellationToken.None);
        var file = Inode.NewFile(range);
        file.Permissions = Mode644;
        directory.Entries![name] = file;
        return file;
    }

    /// <summary>A POSIX access ACL: owner rw, user 1000 r, group r, mask r, other none.</summary>
    private static byte[] AccessAcl()
    {
        (ushort Tag, ushort Perm, uint Id)[] entries =
            [(0x01, 6, uint.MaxValue), (0x02, 4, 1000), (0x04, 4, uint.MaxValue), (0x10, 4, uint.MaxValue),
             (0x20, 0, uint.MaxValue)];
        byte[] value = new byte[4 + entries.Length * 8];
        BinaryPrimitives.WriteUInt32LittleEndian(value, 2);
        for (int i = 0; i < entries.Length; i++)
        {
            var span = value.AsSpan(4 + i * 8);
            BinaryPrimitives.WriteUInt16LittleEndian(span, entries[i].Tag);
            BinaryPrimitives.WriteUInt16LittleEndian(span[2..], entries[i].Perm);
            BinaryPrimitives.WriteUInt32LittleEndian(span[4..], entries[i].Id);
        }

        return value;
    }

    [Fact]
    public async Task Sockets_32_bit_ids_nanosecond_times_and_acls_survive()
    {
        using var tree = new LayerTree(_workspace.Root);
        var socket = Inode.NewSpecial(InodeKind.Socket);
        socket.Permissions = (UnixFileMode)Convert.ToInt32("755", 8);
        socket.Uid = 4_000_000_000;
        socket.Gid = 70_000;
        socket.ModificationTime = DateTimeOffset.FromUnixTimeSeconds(1_700_000_000).AddTicks(1_234_567);
        tree.Root.Entries!["control.sock"] = socket;
        var before1970 = await AddFileAsync(tree, tree.Root, "old", "from 1969"u8.ToArray());
        before1970.ModificationTime = DateTimeOffset.FromUnixTimeSeconds(-86_400);
        var acl = await AddFileAsync(tree, tree.Root, "acl", "acl"u8.ToArray());
        acl.Permissions = (UnixFileMode)Convert.ToInt32("640", 8);
        acl.Xattrs["system.posix_acl_access"] = AccessAcl();
        string image = _workspace.PathOf("api.erofs");

        await new ErofsImageBuilder().WriteAsync(tree, image, null, CancellationToken.None);

        HostTool.FsckExtract(image, _workspace.PathOf("extract"));
        using var mount = MountedImage.Mount(image);
        var expected = new Dictionary<string, ExpectedNode>(StringComparer.Ordinal)
        {
            ["control.sock"] =
                new(ExpectedKind.Socket, "755", 4_000_000_000, 70_000, socket.ModificationTime),
            ["old"] = new(ExpectedKind.File, "644", 0, 0, before1970.ModificationTime)
            {
                Data = "from 1969"u8.ToArray(),
            },
            ["acl"] = new(ExpectedKind.File, "640", 0, 0, DateTimeOffset.UnixEpoch)
            {
                Data = "acl"u8.ToArray(),
                Xattrs = new(StringComparer.Ordinal) { ["system.posix_acl_access"] = AccessAcl() },
            },
        };
        TreeAssert.Matches(mount.Path, expected);
        var stat = PathStat.Of(Path.Join(mount.Path, "control.sock"));
        Assert.Equal(123_456_700u, stat.MtimeNanoseconds);
    }

    [Fact]
    public async Task An_empty_tree_is_a_mountable_empty_root()
    {
        using var tree = new LayerTree(_workspace.Root);
        string image = _workspace.PathOf("empty.erofs");

        await new ErofsImageBuilder().WriteAsync(tree, image, null, CancellationToken.None);

        Assert.Equal(4096, new FileInfo(image).Length);
        HostTool.FsckExtract(image, _workspace.PathOf("extract"));
        using var mount = MountedImage.Mount(image);
        Assert.Empty(Directory.EnumerateFileSystemEntries(mount.Path));
        Assert.Equal(2u, PathStat.Of(mount.Path).Nlink);
    }

    [Fact]
    public async Task The_same_tree_gives_the_same_bytes()
    {
        using var tree = new LayerTree(_workspace.Root);
        var layer = new LayerTar().Directory("d/").File("d/f", "x").Symlink("s", "d/f");
        await tree.ApplyLayerAsync(layer.ToStream(), null, CancellationToken.None);
        var builder = new ErofsImageBuilder();

        await builder.WriteAsync(tree, _workspace.PathOf("one.erofs"), null, CancellationToken.None);
        await builder.WriteAsync(tree, _workspace.PathOf("two.erofs"), null, CancellationToken.None);

        byte[] one = File.ReadAllBytes(_workspace.PathOf("one.erofs"));
        Assert.Equal(one, File.ReadAllBytes(_workspace.PathOf("two.erofs")));
    }

    [Fact]
    public async Task Trees_the_format_cannot_hold_are_refused_before_anything_is_written()
    {
        string image = _workspace.PathOf("refused.erofs");
        async Task<SandboxException> Refused(Action<LayerTree> shape)
        {
            using var tree = new LayerTree(_workspace.PathOf("spool"));
            shape(tree);
            var error = await Assert.ThrowsAsync<SandboxException>(
                () => new ErofsImageBuilder().WriteAsync(tree, image, null, CancellationToken.None));
            Assert.Equal(SandboxErrorKind.InvalidArgument, error.Kind);
            Assert.False(File.Exists(image));
            return error;
        }

        var xattr = await Refused(tree =>
        {
            var file = Inode.NewFile(ContentRange.Empty);
            file.Xattrs["system.nfs4_acl"] = [1];
            tree.Root.Entries!["f"] = file;
        });
        Assert.Equal(("ErofsXattrUnsupported", "/f"), (xattr.ErrorId, xattr.Target));

        var linked = await Refused(tree =>
        {
            var directory = Inode.NewDirectory();
            tree.Root.Entries!["a"] = directory;
            tree.Root.Entries["b"] = directory;
        });
        Assert.Equal(("ErofsDirectoryLinked", "/b"), (linked.ErrorId, linked.Target));

        var name = await Refused(tree => tree.Root.Entries!["x/y"] = Inode.NewSpecial(InodeKind.Fifo));
        Assert.Equal("ErofsNameInvalid", name.ErrorId);

        var device = await Refused(tree =>
            tree.Root.Entries!["d"] = Inode.NewDevice(InodeKind.BlockDevice, 4096, 0));
        Assert.Equal("ErofsDeviceNumberTooLarge", device.ErrorId);

        Assert.Empty(Directory.EnumerateFileSystemEntries(_workspace.Root, "*.erofs"));
    }

    [Fact]
    public async Task A_cancelled_write_leaves_neither_image_nor_temp_file()
    {
        string folder = _workspace.PathOf("out");
        using var tree = new LayerTree(_workspace.PathOf("spool"));
        await AddFileAsync(tree, tree.Root, "big", new byte[8 * 1024 * 1024]);
        string image = Path.Join(folder, "image.erofs");
        using var cancellation = new CancellationTokenSource();
        var progress = new CancelOnFirstReport(cancellation);

        await Assert.ThrowsAnyAsync<OperationCanceledException>(
            () => new ErofsImageBuilder().WriteAsync(tree, image, progress, cancellation.Token));

        Assert.True(progress.Reported > 0);
        Assert.Empty(Directory.EnumerateFileSystemEntries(folder));
    }

    [Fact]
    public async Task A_cancelled_layer_read_stops_with_cancellation()
    {
        using var cancellation = new CancellationTokenSource();
        await cancellation.CancelAsync();
        string image = _workspace.PathOf("cancelled.erofs");

        Stream[] layers = [new LayerTar().File("f", "x").ToStream()];
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() =>
            new ErofsImageBuilder().WriteFromLayersAsync(layers, image, null, cancellation.Token));

        Assert.False(File.Exists(image));
    }

    /// <summary>Cancels at the first progress report, synchronously, so the write is mid-way.</summary>
    private sealed class CancelOnFirstReport(CancellationTokenSource cancellation) : IProgress<long>
    {
        public long Reported { get; private set; }

        public void Report(long value)
        {
            Reported = value;
            cancellation.Cancel();
        }
    }
}
