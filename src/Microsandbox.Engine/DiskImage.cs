using System.Buffers.Binary;
using System.Text;

namespace Microsandbox.Engine;

/// <summary>How a disk image file stores its blocks.</summary>
internal enum DiskImageFormat
{
    /// <summary>The bytes are the disk, block for block.</summary>
    Raw,

    /// <summary>QEMU's copy-on-write format, which can stack an overlay on the original.</summary>
    Qcow2,
}

/// <summary>Reads up to <paramref name="count"/> bytes of a disk at a 512-byte aligned offset.</summary>
/// <returns>Fewer bytes than asked for where the disk ends; none past its end.</returns>
internal delegate byte[] DiskReader(long offset, int count);

/// <summary>A disk image given as <c>-Image</c>, checked to hold a root the guest can mount.</summary>
/// <param name="Path">The image file, absolute.</param>
/// <param name="Format">How the file stores the disk.</param>
/// <param name="Partition">The partition holding the root (1 is the first), or null for the whole disk.</param>
internal sealed record DiskImage(string Path, DiskImageFormat Format, int? Partition)
{
    /// <summary>Sector size the partition tables are read with, as virtio-blk presents the disk.</summary>
    public const int SectorSize = 512;

    // Enough for the MBR, a GPT header with 128 entries, and every signature Identify reads (the
    // btrfs superblock at 64 KiB is the farthest).
    private const int ProbeBytes = 68 * 1024;

    /// <summary>What <see cref="Identify"/> calls the one filesystem a root may have.</summary>
    public const string Ext = "an ext2/3/4 filesystem";

    // The partition type of a GPT x86-64 root, from the Discoverable Partitions Specification.
    private static readonly Guid LinuxRootX64 = new("4f68bce3-e8cd-4db1-96e7-fbcaf984b709");

    /// <summary>
    /// Checks that <paramref name="path"/>, an existing file, is a disk a sandbox can boot, by its
    /// content, never its name: a qcow2 image (read through qemu-img; refused when encrypted or
    /// its backing file is gone) or a raw image, holding an ext2/3/4 root. Anything else is
    /// <c>DiskImageInvalid</c>, naming what was found.
    /// </summary>
    public static async Task<DiskImage> InspectAsync(string path, CancellationToken cancellationToken)
    {
        byte[] magic = new byte[4];
        await using (FileStream file = File.OpenRead(path))
        {
            await file.ReadAtLeastAsync(magic, magic.Length, throwOnEndOfStream: false, cancellationToken)
                .ConfigureAwait(false);
        }

        if (!IsQcow2(magic))
        {
            using var raw = File.OpenHandle(path);
            return Checked(path, DiskImageFormat.Raw, (offset, count) =>
            {
                byte[] buffer = new byte[count];
                int length = RandomAccess.Read(raw, buffer, offset);
                return length == count ? buffer : buffer[..length];
            });
        }

        QemuImg tool = QemuImg.Require();
        QemuImageInfo info = await tool.InfoAsync(path, cancellationToken).ConfigureAwait(false);
        if (info.Format != "qcow2")
        {
            throw Invalid(path, $"qemu-img reads it as {info.Format}, not qcow2");
        }

        if (info.Encrypted)
        {
            throw Invalid(path, "it is an encrypted qcow2 image, and a sandbox has no key to open it");
        }

        if (info.BackingFile is { } backing && !File.Exists(backing))
        {
            throw new SandboxException("DiskImageBackingNotFound", SandboxErrorKind.NotFound,
                $"The qcow2 image '{path}' is an overlay on '{backing}', which does not exist.", backing);
        }

        return Checked(path, DiskImageFormat.Qcow2,
            (offset, count) => tool.Read(path, info.VirtualSize, offset, count));
    }

    /// <summary>Whether the file starts with the qcow2 magic, <c>QFI\xfb</c>.</summary>
    public static bool IsQcow2(ReadOnlySpan<byte> head) =>
        head.Length >= 4 && head[0] == 'Q' && head[1] == 'F' && head[2] == 'I' && head[3] == 0xfb;

    /// <summary>
    /// Where the root filesystem of a disk lies: an ext2/3/4 filesystem on the whole disk (0), or
    /// the number of the partition of an MBR or GPT table holding one; a GPT partition typed as an
    /// x86-64 root wins over the first. Null when there is none, with <paramref name="found"/>
    /// saying what the disk holds instead.
    /// </summary>
    public static int? LocateRoot(DiskReader read, out string found)
    {
        ArgumentNullException.ThrowIfNull(read);
        byte[] head = read(0, ProbeBytes);
        if (head.Length == 0)
        {
            found = "nothing: the file is empty";
            return null;
        }

        // GPT first: its entry array starts at byte 1024, where a stray 0xEF53 could pass for ext.
        if (head.Length >= 2 * SectorSize
            && head.AsSpan(SectorSize, 8).SequenceEqual("EFI PART"u8))
        {
            return LocateInGpt(read, head, out found);
        }

        string? whole = Identify(head);
        if (whole == Ext)
        {
            found = whole;
            return 0;
        }

        if (whole is null && head.Length >= SectorSize && head[510] == 0x55 && head[511] == 0xaa)
        {
            return LocateInMbr(read, head, out found);
        }

        found = whole ?? "no filesystem or partition table that Microsandbox recognises";
        return null;
    }

    /// <summary>
    /// Names what a disk or partition holds by the signature at its start, or null. Only ext2/3/4
    /// can be a root; the others are named so that the error says what was found.
    /// </summary>
    public static string? Identify(ReadOnlySpan<byte> start)
    {
        static bool At(ReadOnlySpan<byte> bytes, int offset, ReadOnlySpan<byte> magic) =>
            bytes.Length >= offset + magic.Length && bytes.Slice(offset, magic.Length).SequenceEqual(magic);

        return true switch
        {
            _ when At(start, 1080, [0x53, 0xef]) => Ext,
            _ when At(start, 0, "XFSB"u8) => "an XFS filesystem",
            _ when At(start, 65600, "_BHRfS_M"u8) => "a btrfs filesystem",
            _ when At(start, 0, "hsqs"u8) => "a squashfs filesystem",
            _ when At(start, 1024, [0xe2, 0xe1, 0xf5, 0xe0]) => "an EROFS filesystem",
            _ when At(start, 32769, "CD001"u8) => "an ISO 9660 filesystem",
            _ when At(start, 3, "NTFS    "u8) => "an NTFS filesystem",
            _ when At(start, 54, "FAT"u8) || At(start, 82, "FAT32"u8) => "a FAT filesystem",
            _ when At(start, 4086, "SWAPSPACE2"u8) => "Linux swap",
            _ when At(start, 0, [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]) => "a LUKS encrypted volume",
            _ when At(start, 0, "KDMV"u8) => "a VMDK disk image",
            _ when At(start, 0, "vhdxfile"u8) => "a VHDX disk image",
            _ when At(start, 0, "conectix"u8) => "a VHD disk image",
            _ when At(start, 64, [0x7f, 0x10, 0xda, 0xbe]) => "a VDI disk image",
            _ when At(start, 0, [0x1f, 0x8b]) => "gzip-compressed data",
            _ when At(start, 0, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) => "xz-compressed data",
            _ when At(start, 0, [0x28, 0xb5, 0x2f, 0xfd]) => "zstd-compressed data",
            _ when At(start, 257, "ustar"u8) => "a tar archive",
            _ => null,
        };
    }

    private static DiskImage Checked(string path, DiskImageFormat format, DiskReader read)
    {
        int? partition = LocateRoot(read, out string found);
        return partition is int number
            ? new DiskImage(path, format, number == 0 ? null : number)
            : throw Invalid(path, $"it holds {found}");
    }

    private static SandboxException Invalid(string path, string found) => new(
        "DiskImageInvalid", SandboxErrorKind.InvalidData,
        $"'{path}' is not a disk image a sandbox can boot: {found}. A root disk is a qcow2 or raw image "
        + "holding an ext2/3/4 filesystem, on the whole disk or in an MBR or GPT partition.", path)
    {
        Hint = "Convert other image formats with 'qemu-img convert -O qcow2 <image> <new>.qcow2'.",
    };

    private static int? LocateInMbr(DiskReader read, byte[] head, out string found)
    {
        var seen = new List<string>();
        for (int slot = 0; slot < 4; slot++)
        {
            ReadOnlySpan<byte> entry = head.AsSpan(446 + (16 * slot), 16);
            byte type = entry[4];
            long first = BinaryPrimitives.ReadUInt32LittleEndian(entry[8..]);

            // Extended partitions hold logical ones, which are not looked into; 0xEE guards a GPT
            // whose header was not found.
            if (type is 0 or 0x05 or 0x0f or 0x85 or 0xee || first == 0)
            {
                continue;
            }

            string? holds = Identify(read(first * SectorSize, ProbeBytes));
            if (holds == Ext)
            {
                found = $"an ext2/3/4 filesystem in MBR partition {slot + 1}";
                return slot + 1;
            }

            seen.Add($"partition {slot + 1}: {holds ?? "unrecognised"}");
        }

        found = seen.Count == 0
            ? "an MBR partition table with no primary partition"
            : $"an MBR partition table with no ext2/3/4 filesystem in a primary partition ({string.Join("; ", seen)})";
        return null;
    }

    private static int? LocateInGpt(DiskReader read, byte[] head, out string found)
    {
        ReadOnlySpan<byte> header = head.AsSpan(SectorSize, SectorSize);
        long entriesLba = (long)BinaryPrimitives.ReadUInt64LittleEndian(header[72..]);
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(header[80..]);
        uint size = BinaryPrimitives.ReadUInt32LittleEndian(header[84..]);
        if (count is 0 or > 1024 || size < 128 || size > 4096 || size % 8 != 0 || entriesLba < 2)
        {
            found = "a GPT header whose partition array is malformed";
            return null;
        }

        long entriesOffset = entriesLba * SectorSize;
        int entriesBytes = (int)(count * size);
        byte[] entries = entriesOffset + entriesBytes <= head.Length
            ? head[(int)entriesOffset..(int)(entriesOffset + entriesBytes)]
            : read(entriesOffset, (entriesBytes + SectorSize - 1) / SectorSize * SectorSize);
        int? first = null;
        var seen = new List<string>();
        for (int index = 0; index < count && (index + 1) * size <= entries.Length; index++)
        {
            ReadOnlySpan<byte> entry = entries.AsSpan((int)(index * size), (int)size);
            var type = new Guid(entry[..16]);
            if (type == Guid.Empty)
            {
                continue;
            }

            long start = (long)BinaryPrimitives.ReadUInt64LittleEndian(entry[32..]);
            string? holds = Identify(read(start * SectorSize, ProbeBytes));
            if (holds == Ext)
            {
                if (type == LinuxRootX64)
                {
                    found = $"an ext2/3/4 filesystem in GPT partition {index + 1}, typed as the root";
                    return index + 1;
                }

                first ??= index + 1;
            }

            string name = Encoding.Unicode.GetString(entry.Slice(56, 72)).TrimEnd('\0');
            seen.Add($"partition {index + 1}{(name.Length > 0 ? $" '{name}'" : "")}: {holds ?? "unrecognised"}");
        }

        if (first is int partition)
        {
            found = $"an ext2/3/4 filesystem in GPT partition {partition}";
            return partition;
        }

        found = seen.Count == 0
            ? "a GPT partition table with no partition"
            : $"a GPT partition table with no ext2/3/4 filesystem ({string.Join("; ", seen)})";
        return null;
    }
}
