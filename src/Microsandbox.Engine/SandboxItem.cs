using System.Text;
using Microsandbox.Protocol;

namespace Microsandbox.Engine;

/// <summary>What a path in a sandbox is.</summary>
public enum SandboxItemType
{
    /// <summary>A regular file.</summary>
    File,

    /// <summary>A directory.</summary>
    Directory,

    /// <summary>A symbolic link; <see cref="SandboxItem.Target"/> says where it points.</summary>
    SymbolicLink,

    /// <summary>A device, a socket or a FIFO.</summary>
    Other,
}

/// <summary>A file, directory or link in a sandbox, as the guest's <c>lstat</c> describes it.</summary>
public sealed class SandboxItem
{
    internal SandboxItem(string sandbox, string fullName, FileEntry entry)
    {
        Sandbox = sandbox;
        FullName = fullName;
        Name = fullName == "/" ? "/" : fullName[(fullName.LastIndexOf('/') + 1)..];
        Type = TypeOf(entry.Type);
        Length = entry.Size;
        UnixMode = (UnixFileMode)(entry.Mode & 0xFFF);
        Mode = ModeString(Type, entry.Mode);
        LastWriteTimeUtc = DateTimeOffset.FromUnixTimeSeconds(entry.ModifiedSeconds).UtcDateTime
            .AddTicks(entry.ModifiedNanoseconds / 100);
        Target = entry.Target;
        UserId = entry.Uid;
        GroupId = entry.Gid;
    }

    /// <summary>The sandbox the item is in.</summary>
    public string Sandbox { get; }

    /// <summary>The last component of the path.</summary>
    public string Name { get; }

    /// <summary>The absolute path in the guest.</summary>
    public string FullName { get; }

    /// <summary>File, Directory, SymbolicLink or Other.</summary>
    public SandboxItemType Type { get; }

    /// <summary>Size in bytes; for a link, the length of its target text.</summary>
    public long Length { get; }

    /// <summary>Permission bits, as <c>ls -l</c> shows them with the type first (<c>-rwxr-xr-x</c>).</summary>
    public string Mode { get; }

    /// <summary>Permission bits, including setuid, setgid and sticky.</summary>
    public UnixFileMode UnixMode { get; }

    /// <summary>Last modification, in local time.</summary>
    public DateTime LastWriteTime => LastWriteTimeUtc.ToLocalTime();

    /// <summary>Last modification, in UTC.</summary>
    public DateTime LastWriteTimeUtc { get; }

    /// <summary>For a symbolic link: what it points to, as stored.</summary>
    public string? Target { get; }

    /// <summary>The owner's user id in the guest.</summary>
    public int UserId { get; }

    /// <summary>The owner's group id in the guest.</summary>
    public int GroupId { get; }

    internal static SandboxItemType TypeOf(string type) => type switch
    {
        FileEntryType.File => SandboxItemType.File,
        FileEntryType.Directory => SandboxItemType.Directory,
        FileEntryType.Symlink => SandboxItemType.SymbolicLink,
        _ => SandboxItemType.Other,
    };

    private static string ModeString(SandboxItemType type, int mode)
    {
        var text = new StringBuilder(10);
        text.Append(type switch
        {
            SandboxItemType.Directory => 'd',
            SandboxItemType.SymbolicLink => 'l',
            SandboxItemType.File => '-',
            _ => '?',
        });
        for (int shift = 6; shift >= 0; shift -= 3)
        {
            int bits = mode >> shift;
            text.Append((bits & 4) != 0 ? 'r' : '-').Append((bits & 2) != 0 ? 'w' : '-');

            // setuid, setgid and sticky show in the execute column of their class.
            int special = shift switch { 6 => 0x800, 3 => 0x400, _ => 0x200 };
            char set = shift == 0 ? 't' : 's';
            text.Append(((mode & special) != 0, (bits & 1) != 0) switch
            {
                (true, true) => set,
                (true, false) => char.ToUpperInvariant(set),
                (false, true) => 'x',
                _ => '-',
            });
        }

        return text.ToString();
    }
}
