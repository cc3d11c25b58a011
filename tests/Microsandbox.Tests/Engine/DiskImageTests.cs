using System.Buffers.Binary;
using System.Text;
using Microsandbox.Engine;
using ToolRunner = Microsandbox.Tests.Images.Erofs.HostTool;

namespace Microsandbox.Tests.Engine;

/// <summary>
/// Disk image detection by content: real ext4 filesystems from the host's mkfs.ext4, real qcow2
/// images from qemu-img, partition tables written here byte by byte as the specifications lay them out.
/// </summary>
public sealed class DiskImageTests : IDisposable
{
    private const int MiB = 1 << 20;
    private static readonly Guid LinuxFilesystem = new("0fc63daf-8483-4772-8e79-3d69d8477de4");
    private static readonly Guid LinuxRootX64 = new("4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
    private readonly string _dir = Directory.CreateTempSubdirectory("msb-disk-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task An_ext4_filesystem_on_the_whole_disk_is_a_raw_root()
    {
        string raw = Ext4(Path.Join(_dir, "whole.img"), offset: 0);

        DiskImage disk = await DiskImage.InspectAsync(raw, CancellationToken.None);

        Assert.Equal(DiskImageFormat.Raw, disk.Format);
        Assert.Null(disk.Partition);
        Assert.Equal(raw, disk.Path);
    }

    [Fact]
    public async Task A_file_with_the_qcow2_magic_is_read_through_qemu_img()
    {
        string raw = Ext4(Path.Join(_dir, "whole.img"), offset: 0);
        string qcow2 = Convert(raw, "disk.qcow2");
        Assert.True(DiskImage.IsQcow2(File.ReadAllBytes(qcow2).AsSpan(0, 4)));

        DiskImage disk = await DiskImage.InspectAsync(qcow2, CancellationToken.None);

        Assert.Equal(DiskImageFormat.Qcow2, disk.Format);
        Assert.Null(disk.Partition);
    }

    [Fact]
    public async Task An_MBR_partition_holding_ext4_is_the_root_in_raw_and_qcow2()
    {
        // Slot 1 holds nothing known, slot 2 the filesystem: the first ext partition wins.
        string raw = Ext4(Path.Join(_dir, "mbr.img"), offset: 2 * MiB);
        WriteMbr(raw, (0x83, 1 * MiB / 512, 1 * MiB / 512), (0x83, 2 * MiB / 512, 8 * MiB / 512));

        DiskImage fromRaw = await DiskImage.InspectAsync(raw, CancellationToken.None);
        DiskImage fromQcow2 = await DiskImage.InspectAsync(Convert(raw, "mbr.qcow2"), CancellationToken.None);

        Assert.Equal(2, fromRaw.Partition);
        Assert.Equal((DiskImageFormat.Qcow2, 2), (fromQcow2.Format, fromQcow2.Partition));
    }

    [Fact]
    public async Task A_GPT_partition_holding_ext4_is_the_root()
    {
        string raw = Ext4(Path.Join(_dir, "gpt.img"), offset: 1 * MiB);
        WriteGpt(raw, (LinuxFilesystem, 1 * MiB / 512, "data"));

        DiskImage disk = await DiskImage.InspectAsync(raw, CancellationToken.None);

        Assert.Equal(1, disk.Partition);
    }

    [Fact]
    public async Task A_GPT_partition_typed_as_the_root_wins_over_an_earlier_ext4_one()
    {
        string raw = Ext4(Path.Join(_dir, "gpt.img"), offset: 1 * MiB);
        Ext4Into(raw, offset: 10 * MiB);
        WriteGpt(raw, (LinuxFilesystem, 1 * MiB / 512, "home"), (LinuxRootX64, 10 * MiB / 512, "root"));

        DiskImage disk = await DiskImage.InspectAsync(raw, CancellationToken.None);

        Assert.Equal(2, disk.Partition);
    }

    [Theory]
    [InlineData(256 * 1024, "no filesystem or partition table")]
    [InlineData(0, "the file is empty")]
    public async Task Random_bytes_or_nothing_are_no_disk_image_and_the_error_names_the_file(
        int length, string found)
    {
        string path = Path.Join(_dir, "noise.img");
        File.WriteAllBytes(path, new Random(7).GetItems<byte>(Enumerable.Range(1, 255).Select(b => (byte)b)
            .ToArray(), length));

        var ex = await Assert.ThrowsAsync<SandboxException>(() => DiskImage.InspectAsync(path, CancellationToken.None));

        Assert.Equal("DiskImageInvalid", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidData, ex.Kind);
        Assert.Equal(path, ex.Target);
        Assert.Contains(found, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_partition_table_without_ext4_says_what_its_partitions_hold()
    {
        string path = Path.Join(_dir, "xfs.img");
        using (var file = File.Create(path))
        {
            file.SetLength(4 * MiB);
            file.Position = 1 * MiB;
            file.Write("XFSB"u8);
        }

        WriteMbr(path, (0x83, 1 * MiB / 512, 3 * MiB / 512));

        var ex = await Assert.ThrowsAsync<SandboxException>(() => DiskImage.InspectAsync(path, CancellationToken.None));

        Assert.Equal("DiskImageInvalid", ex.ErrorId);
        Assert.Contains("partition 1: an XFS filesystem", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_qcow2_image_that_qemu_img_cannot_read_is_invalid()
    {
        string path = Path.Join(_dir, "broken.qcow2");
        File.WriteAllBytes(path, [(byte)'Q', (byte)'F', (byte)'I', 0xfb, 0, 0, 0, 3, 1, 2, 3]);

        var ex = await Assert.ThrowsAsync<SandboxException>(() => DiskImage.InspectAsync(path, CancellationToken.None));

        Assert.Equal("DiskImageInvalid", ex.ErrorId);
        Assert.Equal(path, ex.Target);
    }

    [Fact]
    public async Task A_qcow2_overlay_whose_backing_file_is_gone_is_refused()
    {
        string raw = Ext4(Path.Join(_dir, "whole.img"), offset: 0);
        string original = Convert(raw, "original.qcow2");
        string overlay = Path.Join(_dir, "overlay.qcow2");
        Run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", original, overlay);
        File.Delete(original);

        var ex = await Assert.ThrowsAsync<SandboxException>(
            () => DiskImage.InspectAsync(overlay, CancellationToken.None));

        Assert.Equal("DiskImageBackingNotFound", ex.ErrorId);
        Assert.Equal(original, ex.Target);
    }

    [Fact]
    public void Identify_names_foreign_formats_and_finds_nothing_in_zeros()
    {
        byte[] vmdk = new byte[4096];
        "KDMV"u8.CopyTo(vmdk);

        Assert.Equal("a VMDK disk image", DiskImage.Identify(vmdk));
        Assert.Null(DiskImage.Identify(new byte[70_000]));
        Assert.Null(DiskImage.LocateRoot((_, count) => new byte[count], out string found));
        Assert.Equal("no filesystem or partition table that Microsandbox recognises", found);
    }

    /// <summary>A sparse file with a real ext4 filesystem of 8 MiB at <paramref name="offset"/>.</summary>
    private static string Ext4(string path, long offset)
    {
        using (var file = File.Create(path))
        {
            file.SetLength(offset + (8 * MiB) + MiB);
        }

        Ext4Into(path, offset);
        return path;
    }

    private static void Ext4Into(string path, long offset) =>
        Run("mkfs.ext4", "-q", "-F", "-E", $"offset={offset}", path, "8M");

    private string Convert(string raw, string name)
    {
        string path = Path.Join(_dir, name);
        Run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, path);
        return path;
    }

    /// <summary>An MBR with the given primary partitions (type, first sector, sectors).</summary>
    private static void WriteMbr(string path, params (byte Type, long First, long Sectors)[] partitions)
    {
        byte[] mbr = new byte[512];
        for (int i = 0; i < partitions.Length; i++)
        {
            Span<byte> entry = mbr.AsSpan(446 + (16 * i), 16);
            entry[4] = partitions[i].Type;
            BinaryPrimitives.WriteUInt32LittleEndian(entry[8..], (uint)partitions[i].First);
            BinaryPrimitives.WriteUInt32LittleEndian(entry[12..], (uint)partitions[i].Sectors);
        }

        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        WriteAt(path, 0, mbr);
    }

    /// <summary>A protective MBR, a GPT header at LBA 1 and 128 entries from LBA 2 (no CRCs: not read).</summary>
    private static void WriteGpt(string path, params (Guid Type, long First, string Name)[] partitions)
    {
        WriteMbr(path, (0xee, 1, (new FileInfo(path).Length / 512) - 1));
        byte[] header = new byte[512];
        "EFI PART"u8.CopyTo(header);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(8), 0x00010000);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(12), 92);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(24), 1);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(40), 34);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(72), 2);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(80), 128);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(84), 128);
        WriteAt(path, 512, header);
        byte[] entries = new byte[128 * 128];
        for (int i = 0; i < partitions.Length; i++)
        {
            Span<byte> entry = entries.AsSpan(128 * i, 128);
            partitions[i].Type.TryWriteBytes(entry);
            Guid.NewGuid().TryWriteBytes(entry[16..]);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[32..], (ulong)partitions[i].First);
            Encoding.Unicode.GetBytes(partitions[i].Name).CopyTo(entry[56..]);
        }

        WriteAt(path, 1024, entries);
    }

    private static void WriteAt(string path, long offset, byte[] bytes)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Write);
        file.Position = offset;
        file.Write(bytes);
    }

    private static void Run(string program, params string[] arguments)
    {
        var (code, output) = ToolRunner.Run(program, arguments);
        Assert.True(code == 0, $"{program} failed ({code}): {output}");
    }
}
