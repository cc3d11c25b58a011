using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace Microsandbox.Tests.Images.Erofs;

/// <summary>Runs host tools and fails the test, with their output, when they do.</summary>
internal static class HostTool
{
    public static (int ExitCode, string Output) Run(string program, params string[] arguments)
    {
        var info = new ProcessStartInfo(program)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }

        Process process;
        try
        {
            process = Process.Start(info) ?? throw new InvalidOperationException($"{program} did not start");
        }
        catch (System.ComponentModel.Win32Exception exception)
        {
            Assert.Fail($"'{program}' is needed by this test and could not be run: {exception.Message}");
            throw;
        }

        using (process)
        {
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(60_000))
            {
                process.Kill(entireProcessTree: true);
                Assert.Fail($"'{program} {string.Join(' ', arguments)}' did not finish in 60 s.");
            }

            return (process.ExitCode, stdout.Result + stderr.Result);
        }
    }

    /// <summary>Checks the image with erofs-utils and extracts it; returns the extraction folder.</summary>
    public static string FsckExtract(string image, string into)
    {
        // Only root extracts device nodes and keeps owners.
        MountedImage.RequireRoot();
        Directory.CreateDirectory(into);
        var (code, output) = Run("fsck.erofs", $"--extract={into}", image);
        Assert.True(code == 0, $"fsck.erofs --extract failed ({code}):\n{output}");
        return into;
    }
}

/// <summary>
/// The image mounted read-only by the host kernel through a loop device, unmounted on dispose.
/// Needs root; without it the test fails and says so rather than passing untested.
/// </summary>
internal sealed class MountedImage : IDisposable
{
    private MountedImage(string path) => Path = path;

    public string Path { get; }

    /// <summary>Fails the test, saying why, unless it runs as root.</summary>
    public static void RequireRoot() => Assert.True(Environment.IsPrivilegedProcess,
        "Checking an EROFS image needs root (mount -t erofs -o loop, fsck.erofs --extract with "
        + "device nodes and owners); run the tests as root.");

    public static MountedImage Mount(string image)
    {
        RequireRoot();
        string directory = Directory.CreateTempSubdirectory("msb-erofs-mnt-").FullName;
        var (code, output) = HostTool.Run("mount", "-t", "erofs", "-o", "loop,ro", image, directory);
        if (code != 0)
        {
            Directory.Delete(directory);
            Assert.Fail($"The kernel refused the image (mount -t erofs -o loop,ro exited {code}):\n{output}");
        }

        return new MountedImage(directory);
    }

    public void Dispose()
    {
        var (code, output) = HostTool.Run("umount", Path);
        if (code == 0)
        {
            Directory.Delete(Path);
        }
        else
        {
            throw new InvalidOperationException($"umount {Path} failed: {output}");
        }
    }
}

/// <summary>lstat-like facts and xattrs of a path, read with statx and the xattr calls.</summary>
internal sealed record PathStat(
    uint Mode, uint Uid, uint Gid, uint Nlink, ulong Ino, long Size, long MtimeSeconds, uint MtimeNanoseconds,
    uint RdevMajor, uint RdevMinor)
{
    private const int AtFdCwd = -100;
    private const int AtSymlinkNoFollow = 0x100;
    private const uint StatxBasicStats = 0x7FF;

    public uint TypeBits => Mode & 0xF000;

    public uint Permissions => Mode & 0xFFF;

    public static PathStat Of(string path)
    {
        byte[] buffer = new byte[256];
        if (NativeMethods.Statx(AtFdCwd, path, AtSymlinkNoFollow, StatxBasicStats, buffer) != 0)
        {
            throw new IOException($"statx {path}: errno {Marshal.GetLastPInvokeError()}");
        }

        var span = buffer.AsSpan();
        return new PathStat(
            Mode: BinaryPrimitives.ReadUInt16LittleEndian(span[28..]),
            Uid: BinaryPrimitives.ReadUInt32LittleEndian(span[20..]),
            Gid: BinaryPrimitives.ReadUInt32LittleEndian(span[24..]),
            Nlink: BinaryPrimitives.ReadUInt32LittleEndian(span[16..]),
            Ino: BinaryPrimitives.ReadUInt64LittleEndian(span[32..]),
            Size: BinaryPrimitives.ReadInt64LittleEndian(span[40..]),
            MtimeSeconds: BinaryPrimitives.ReadInt64LittleEndian(span[112..]),
            MtimeNanoseconds: BinaryPrimitives.ReadUInt32LittleEndian(span[120..]),
            RdevMajor: BinaryPrimitives.ReadUInt32LittleEndian(span[128..]),
            RdevMinor: BinaryPrimitives.ReadUInt32LittleEndian(span[132..]));
    }

    /// <summary>Every xattr the kernel lists for the path, without following a symlink.</summary>
    public static Dictionary<string, byte[]> Xattrs(string path)
    {
        var result = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        long size = NativeMethods.Llistxattr(path, null, 0);
        if (size < 0)
        {
            throw new IOException($"llistxattr {path}: errno {Marshal.GetLastPInvokeError()}");
        }

        byte[] list = new byte[size];
        size = NativeMethods.Llistxattr(path, list, (nuint)list.Length);
        string names = Encoding.UTF8.GetString(list, 0, (int)size);
        foreach (string name in names.Split('\0', StringSplitOptions.RemoveEmptyEntries))
        {
            long length = NativeMethods.Lgetxattr(path, name, null, 0);
            if (length < 0)
            {
                throw new IOException($"lgetxattr {path} {name}: errno {Marshal.GetLastPInvokeError()}");
            }

            byte[] value = new byte[length];
            length = NativeMethods.Lgetxattr(path, name, value, (nuint)value.Length);
            result[name] = value[..(int)length];
        }

        return result;
    }

    private static class NativeMethods
    {
        [DllImport("libc", EntryPoint = "statx", SetLastError = true)]
        public static extern int Statx(
            int dirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, byte[] buffer);

        [DllImport("libc", EntryPoint = "llistxattr", SetLastError = true)]
        public static extern nint Llistxattr(
            [MarshalAs(UnmanagedType.LPUTF8Str)] string path, byte[]? list, nuint size);

        [DllImport("libc", EntryPoint = "lgetxattr", SetLastError = true)]
        public static extern nint Lgetxattr(
            [MarshalAs(UnmanagedType.LPUTF8Str)] string path,
            [MarshalAs(UnmanagedType.LPUTF8Str)] string name,
            byte[]? value,
            nuint size);
    }
}

/// <summary>Compares a directory tree (a mount or an extraction) with what layers should give.</summary>
internal static class TreeAssert
{
    /// <summary>
    /// Every expected path exists with its type, mode, owner, time, bytes, target, device
    /// numbers, xattrs, link count and link identity; no other path exists. An fsck.erofs 1.5
    /// extraction is held to less: it drops setuid and setgid (it chowns after chmod), xattrs,
    /// hard links and symlink times.
    /// </summary>
    public static void Matches(
        string root, IReadOnlyDictionary<string, ExpectedNode> expected, bool fsckExtraction = false)
    {
        bool xattrsAndLinks = !fsckExtraction;
        uint modeMask = fsckExtraction ? 0x1FFu : 0xFFFu;
        var actual = Walk(root).ToHashSet(StringComparer.Ordinal);

        // The key "" stands for the root itself, which the walk does not list.
        var missing = expected.Keys.Where(path => path.Length > 0 && !actual.Contains(path)).ToList();
        var extra = actual.Where(path => !expected.ContainsKey(path)).ToList();
        Assert.True(missing.Count == 0 && extra.Count == 0,
            $"Paths differ under {root}.\nMissing: {string.Join(", ", missing.Take(20))}\n"
            + $"Unexpected: {string.Join(", ", extra.Take(20))}");

        var inodeOf = new Dictionary<ExpectedNode, ulong>(ReferenceEqualityComparer.Instance);
        var linkCount = new Dictionary<ExpectedNode, int>(ReferenceEqualityComparer.Instance);
        foreach (var node in expected.Values)
        {
            linkCount[node] = linkCount.GetValueOrDefault(node) + 1;
        }

        foreach (var (path, node) in expected)
        {
            string full = Path.Join(root, path);
            var stat = PathStat.Of(full);
            Assert.True(TypeBits(node.Kind) == stat.TypeBits,
                $"{path}: type {stat.TypeBits:x}, expected {node.Kind}");
            Assert.True((Convert.ToUInt32(node.Mode, 8) & modeMask) == (stat.Permissions & modeMask),
                $"{path}: mode {Convert.ToString(stat.Permissions, 8)}, expected {node.Mode}");
            Assert.True(node.Uid == stat.Uid && node.Gid == stat.Gid,
                $"{path}: owner {stat.Uid}:{stat.Gid}, expected {node.Uid}:{node.Gid}");
            if (node.Kind != ExpectedKind.Symlink || !fsckExtraction)
            {
                Assert.True(node.Time.ToUnixTimeSeconds() == stat.MtimeSeconds,
                    $"{path}: mtime {stat.MtimeSeconds}, expected {node.Time.ToUnixTimeSeconds()}");
            }

            switch (node.Kind)
            {
                case ExpectedKind.File:
                    AssertSameBytes(path, node.Data ?? [], full);
                    break;
                case ExpectedKind.Symlink:
                    Assert.Equal(node.Target, new FileInfo(full).LinkTarget);
                    break;
                case ExpectedKind.CharacterDevice or ExpectedKind.BlockDevice:
                    Assert.True((uint)node.Major == stat.RdevMajor && (uint)node.Minor == stat.RdevMinor,
                        $"{path}: device {stat.RdevMajor}:{stat.RdevMinor}, "
                        + $"expected {node.Major}:{node.Minor}");
                    break;
            }

            if (!xattrsAndLinks)
            {
                continue;
            }

            var xattrs = PathStat.Xattrs(full);
            var wanted = node.Xattrs ?? [];
            bool same = wanted.Count == xattrs.Count && wanted.All(pair =>
                xattrs.TryGetValue(pair.Key, out byte[]? value) && value.AsSpan().SequenceEqual(pair.Value));
            Assert.True(same, $"{path}: xattrs [{Describe(xattrs)}], expected [{Describe(wanted)}]");
            if (node.Kind == ExpectedKind.Directory)
            {
                // "." and the parent's entry, plus each subdirectory's "..".
                string prefix = path.Length == 0 ? "" : path + "/";
                int subdirectories = expected.Count(pair => pair.Value.Kind == ExpectedKind.Directory
                    && pair.Key.Length > prefix.Length
                    && pair.Key.StartsWith(prefix, StringComparison.Ordinal)
                    && !pair.Key.AsSpan(prefix.Length).Contains('/'));
                Assert.True(2 + subdirectories == stat.Nlink,
                    $"{path}: nlink {stat.Nlink}, expected {2 + subdirectories}");
            }
            else
            {
                Assert.True(linkCount[node] == stat.Nlink,
                    $"{path}: nlink {stat.Nlink}, expected {linkCount[node]}");
                if (inodeOf.TryGetValue(node, out ulong ino))
                {
                    Assert.True(ino == stat.Ino, $"{path}: inode {stat.Ino}, expected the hard link's {ino}");
                }
                else
                {
                    inodeOf[node] = stat.Ino;
                }
            }
        }
    }

    /// <summary>Relative paths under a root, not following symlinks, without the root itself.</summary>
    public static IEnumerable<string> Walk(string root)
    {
        var pending = new Stack<string>();
        pending.Push("");
        while (pending.Count > 0)
        {
            string relative = pending.Pop();
            foreach (string child in Directory.EnumerateFileSystemEntries(Path.Join(root, relative)))
            {
                string childRelative = Path.GetRelativePath(root, child);
                yield return childRelative;
                if ((PathStat.Of(child).Mode & 0xF000) == 0x4000)
                {
                    pending.Push(childRelative);
                }
            }
        }
    }

    public static uint TypeBits(ExpectedKind kind) => kind switch
    {
        ExpectedKind.File => 0x8000,
        ExpectedKind.Directory => 0x4000,
        ExpectedKind.Symlink => 0xA000,
        ExpectedKind.CharacterDevice => 0x2000,
        ExpectedKind.BlockDevice => 0x6000,
        ExpectedKind.Fifo => 0x1000,
        _ => 0xC000,
    };

    private static void AssertSameBytes(string path, byte[] expected, string file)
    {
        var info = new FileInfo(file);
        Assert.True(expected.Length == info.Length,
            $"{path}: {info.Length} bytes, expected {expected.Length}");
        if (expected.Length <= 1 << 16)
        {
            Assert.True(expected.AsSpan().SequenceEqual(File.ReadAllBytes(file)), $"{path}: content differs");
            return;
        }

        using var stream = File.OpenRead(file);
        Assert.True(SHA256.HashData(expected).AsSpan().SequenceEqual(SHA256.HashData(stream)),
            $"{path}: content differs");
    }

    private static string Describe(Dictionary<string, byte[]> xattrs) =>
        string.Join(", ", xattrs.OrderBy(pair => pair.Key, StringComparer.Ordinal)
            .Select(pair => $"{pair.Key}={Convert.ToHexString(pair.Value)}"));
}
