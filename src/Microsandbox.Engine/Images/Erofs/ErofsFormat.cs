using System.Buffers.Binary;
using System.Text;

namespace Microsandbox.Engine.Images.Erofs;

/// <summary>
/// The EROFS on-disk structures this writer emits (the kernel's <c>erofs_fs.h</c>), all
/// little-endian: the superblock, compact and extended inodes, inline xattrs and directory entries.
/// </summary>
internal static class ErofsFormat
{
    public const uint Magic = 0xE0F5E1E2;
    public const int SuperBlockOffset = 1024;
    public const int SuperBlockSize = 128;
    public const int BlockSizeBits = 12;
    public const int BlockSize = 1 << BlockSizeBits;

    /// <summary>Inodes are addressed in 32-byte slots (the nid) from the metadata start.</summary>
    public const int InodeSlotSize = 32;
    public const int CompactInodeSize = 32;
    public const int ExtendedInodeSize = 64;
    public const int DirentSize = 12;
    public const int MaxNameLength = 255;
    public const int XattrHeaderSize = 12;
    public const int XattrEntryHeaderSize = 4;

    /// <summary>mkfs.erofs sets this for images whose inode times are modification times.</summary>
    public const uint FeatureCompatMtime = 0x2;

    public const byte LayoutFlatPlain = 0;
    public const byte LayoutFlatInline = 2;

    /// <summary>Block address of a file with no whole block of data, as mkfs.erofs writes it.</summary>
    public const uint NullBlockAddress = 0xFFFFFFFF;

    public const byte FileTypeRegular = 1;
    public const byte FileTypeDirectory = 2;
    public const byte FileTypeCharacterDevice = 3;
    public const byte FileTypeBlockDevice = 4;
    public const byte FileTypeFifo = 5;
    public const byte FileTypeSocket = 6;
    public const byte FileTypeSymlink = 7;

    private static readonly UTF8Encoding StrictUtf8 =
        new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    // The short prefixes every EROFS kernel knows; the ACL entries are whole names.
    private static readonly (string Prefix, byte Index)[] XattrPrefixes =
    [
        ("system.posix_acl_default", 3),
        ("system.posix_acl_access", 2),
        ("security.", 6),
        ("trusted.", 4),
        ("user.", 1),
    ];

    /// <summary>The <c>S_IFMT</c> bits of a kind.</summary>
    public static ushort TypeBits(InodeKind kind) => kind switch
    {
        InodeKind.RegularFile => 0x8000,
        InodeKind.Directory => 0x4000,
        InodeKind.SymbolicLink => 0xA000,
        InodeKind.CharacterDevice => 0x2000,
        InodeKind.BlockDevice => 0x6000,
        InodeKind.Fifo => 0x1000,
        InodeKind.Socket => 0xC000,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>The directory-entry file type of a kind.</summary>
    public static byte FileType(InodeKind kind) => kind switch
    {
        InodeKind.RegularFile => FileTypeRegular,
        InodeKind.Directory => FileTypeDirectory,
        InodeKind.SymbolicLink => FileTypeSymlink,
        InodeKind.CharacterDevice => FileTypeCharacterDevice,
        InodeKind.BlockDevice => FileTypeBlockDevice,
        InodeKind.Fifo => FileTypeFifo,
        InodeKind.Socket => FileTypeSocket,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>
    /// Linux's <c>new_encode_dev</c>: 12 bits of major and 20 of minor, the layout the kernel
    /// decodes from an inode's rdev.
    /// </summary>
    public static uint EncodeDevice(uint major, uint minor) =>
        (minor & 0xFF) | ((major & 0xFFF) << 8) | ((minor & ~0xFFu) << 12);

    /// <summary>Whether a device number survives <see cref="EncodeDevice"/>.</summary>
    public static bool IsEncodableDevice(uint major, uint minor) => major <= 0xFFF && minor <= 0xFFFFF;

    /// <summary>A name's UTF-8 bytes; false for text that is not valid Unicode.</summary>
    public static bool TryEncodeName(string name, out byte[] bytes)
    {
        try
        {
            bytes = StrictUtf8.GetBytes(name);
            return true;
        }
        catch (EncoderFallbackException)
        {
            bytes = [];
            return false;
        }
    }

    /// <summary>
    /// Splits an xattr name into the EROFS prefix index and the stored suffix; false for a
    /// namespace EROFS cannot name without the long-prefix feature older kernels lack.
    /// </summary>
    public static bool TrySplitXattrName(string name, out byte index, out byte[] suffix)
    {
        foreach (var (prefix, prefixIndex) in XattrPrefixes)
        {
            if (name.StartsWith(prefix, StringComparison.Ordinal)
                && TryEncodeName(name[prefix.Length..], out suffix))
            {
                // The ACL names are whole names; anything after them is a different attribute.
                bool wholeNameOnly = prefixIndex is 2 or 3;
                if ((wholeNameOnly && suffix.Length != 0) || (!wholeNameOnly && suffix.Length == 0))
                {
                    break;
                }

                if (suffix.Length > MaxNameLength)
                {
                    break;
                }

                index = prefixIndex;
                return true;
            }
        }

        index = 0;
        suffix = [];
        return false;
    }

    /// <summary>Rounds up to a multiple of a power of two.</summary>
    public static long AlignUp(long value, int alignment) => (value + alignment - 1) & ~(long)(alignment - 1);

    /// <summary>Writes the 128-byte superblock.</summary>
    public static void WriteSuperBlock(
        Span<byte> destination, ushort rootNid, ulong inodeCount, long epochSeconds, uint epochNanoseconds,
        uint blockCount, Guid uuid, ReadOnlySpan<byte> volumeName)
    {
        destination[..SuperBlockSize].Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Magic);
        // Offset 4 is the crc32c checksum, used only with the sb_csum feature, which is left off.
        BinaryPrimitives.WriteUInt32LittleEndian(destination[8..], FeatureCompatMtime);
        destination[12] = BlockSizeBits;
        destination[13] = 0; // no extension slots
        BinaryPrimitives.WriteUInt16LittleEndian(destination[14..], rootNid);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[16..], inodeCount);
        BinaryPrimitives.WriteInt64LittleEndian(destination[24..], epochSeconds);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[32..], epochNanoseconds);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[36..], blockCount);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[40..], 0); // meta_blkaddr: nids count from 0
        BinaryPrimitives.WriteUInt32LittleEndian(destination[44..], 0); // no shared xattrs
        uuid.TryWriteBytes(destination.Slice(48, 16), bigEndian: true, out _);
        volumeName[..Math.Min(volumeName.Length, 16)].CopyTo(destination.Slice(64, 16));
        // feature_incompat (offset 80) stays 0: any kernel with EROFS reads the image.
    }

    /// <summary>Writes a 32-byte compact inode; its time is the superblock's epoch.</summary>
    public static void WriteCompactInode(
        Span<byte> destination, byte layout, ushort xattrCount, ushort mode, ushort nlink, uint size,
        uint union, uint ino, ushort uid, ushort gid)
    {
        destination[..CompactInodeSize].Clear();
        BinaryPrimitives.WriteUInt16LittleEndian(destination, (ushort)(layout << 1));
        BinaryPrimitives.WriteUInt16LittleEndian(destination[2..], xattrCount);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[4..], mode);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[6..], nlink);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[8..], size);
        // Offset 12 is a time offset from the epoch on new kernels and reserved on old ones; 0 suits both.
        BinaryPrimitives.WriteUInt32LittleEndian(destination[16..], union);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[20..], ino);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[24..], uid);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[26..], gid);
    }

    /// <summary>Writes a 64-byte extended inode, with its own 64-bit time and 32-bit ids.</summary>
    public static void WriteExtendedInode(
        Span<byte> destination, byte layout, ushort xattrCount, ushort mode, uint nlink, ulong size,
        uint union, uint ino, uint uid, uint gid, long mtimeSeconds, uint mtimeNanoseconds)
    {
        destination[..ExtendedInodeSize].Clear();
        BinaryPrimitives.WriteUInt16LittleEndian(destination, (ushort)(1 | (layout << 1)));
        BinaryPrimitives.WriteUInt16LittleEndian(destination[2..], xattrCount);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[4..], mode);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], size);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[16..], union);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[20..], ino);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[24..], uid);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[28..], gid);
        BinaryPrimitives.WriteInt64LittleEndian(destination[32..], mtimeSeconds);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[40..], mtimeNanoseconds);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[44..], nlink);
    }

    /// <summary>Writes one 12-byte directory entry.</summary>
    public static void WriteDirent(Span<byte> destination, ulong nid, ushort nameOffset, byte fileType)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(destination, nid);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[8..], nameOffset);
        destination[10] = fileType;
        destination[11] = 0;
    }
}
