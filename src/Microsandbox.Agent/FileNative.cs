using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Microsandbox.Protocol;

namespace Microsandbox.Agent;

/// <summary>The calls file sessions need that .NET does not wrap: owners and exact times.</summary>
internal static partial class Native
{
    public const int ENOENT = 2;
    public const int ENOTDIR = 20;
    private const int AtFdCwd = -100;
    private const int AtSymlinkNoFollow = 0x100;
    private const uint StatxBasicStats = 0x7ff;
    private const long UtimeOmit = (1L << 30) - 2;

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int StatX(int dirFd, string path, int flags, uint mask, byte[] buffer);

    [LibraryImport("libc", EntryPoint = "utimensat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int UtimensAt(int dirFd, string path, long[] times, int flags);

    [LibraryImport("libc", EntryPoint = "lchown", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int LChown(string path, uint uid, uint gid);

    /// <summary>
    /// The entry of <paramref name="path"/>, or null with <paramref name="errno"/> set. statx has the
    /// same layout on every architecture, unlike struct stat.
    /// </summary>
    public static FileEntry? Stat(string path, bool followLinks, out int errno)
    {
        var buffer = new byte[256];
        if (StatX(AtFdCwd, path, followLinks ? 0 : AtSymlinkNoFollow, StatxBasicStats, buffer) != 0)
        {
            errno = Marshal.GetLastPInvokeError();
            return null;
        }

        errno = 0;
        ReadOnlySpan<byte> b = buffer;
        int mode = BinaryPrimitives.ReadUInt16LittleEndian(b[28..]);
        string type = (mode & 0xF000) switch
        {
            0x8000 => FileEntryType.File,
            0x4000 => FileEntryType.Directory,
            0xA000 => FileEntryType.Symlink,
            _ => FileEntryType.Other,
        };
        return new FileEntry
        {
            Name = Path.GetFileName(path.TrimEnd('/')) is { Length: > 0 } name ? name : "/",
            Type = type,
            Mode = mode & 0xFFF,
            Uid = (int)BinaryPrimitives.ReadUInt32LittleEndian(b[20..]),
            Gid = (int)BinaryPrimitives.ReadUInt32LittleEndian(b[24..]),
            Size = (long)BinaryPrimitives.ReadUInt64LittleEndian(b[40..]),
            ModifiedSeconds = BinaryPrimitives.ReadInt64LittleEndian(b[112..]),
            ModifiedNanoseconds = (int)BinaryPrimitives.ReadUInt32LittleEndian(b[120..]),
            Target = type == FileEntryType.Symlink ? new FileInfo(path).LinkTarget : null,
        };
    }

    /// <summary>Sets the modification time, leaving the access time; a final link itself is changed.</summary>
    public static void SetModified(string path, long seconds, int nanoseconds) =>
        Check(UtimensAt(AtFdCwd, path, [0, UtimeOmit, seconds, nanoseconds], AtSymlinkNoFollow), "utimensat");

    /// <summary>Sets the owner; a final link itself is changed.</summary>
    public static void SetOwner(string path, int uid, int gid) =>
        Check(LChown(path, unchecked((uint)uid), unchecked((uint)gid)), "lchown");
}
