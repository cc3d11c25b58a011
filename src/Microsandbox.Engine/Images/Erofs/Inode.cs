namespace Microsandbox.Engine.Images.Erofs;

/// <summary>The file types an image can hold; the set Linux <c>S_IFMT</c> distinguishes.</summary>
internal enum InodeKind
{
    /// <summary>A regular file; its bytes live in the tree's content spool.</summary>
    RegularFile,

    /// <summary>A directory, owning its named entries.</summary>
    Directory,

    /// <summary>A symbolic link; only its target text is stored, it is never followed.</summary>
    SymbolicLink,

    /// <summary>A character device node.</summary>
    CharacterDevice,

    /// <summary>A block device node.</summary>
    BlockDevice,

    /// <summary>A named pipe.</summary>
    Fifo,

    /// <summary>A Unix socket node (tar cannot carry one, but a tree built in code can).</summary>
    Socket,
}

/// <summary>Where a regular file's bytes are in a <see cref="ContentSpool"/>.</summary>
internal readonly record struct ContentRange(long Offset, long Length)
{
    /// <summary>The range of an empty file.</summary>
    public static ContentRange Empty => default;
}

/// <summary>
/// One file object of an image tree. Several directory entries may name the same regular file,
/// symlink or device inode (hard links); a directory has exactly one parent.
/// </summary>
internal sealed class Inode
{
    private Inode(InodeKind kind)
    {
        Kind = kind;
        Entries = kind == InodeKind.Directory ? new Dictionary<string, Inode>(StringComparer.Ordinal) : null;
    }

    /// <summary>The file type.</summary>
    public InodeKind Kind { get; }

    /// <summary>Permission bits including setuid, setgid and sticky (the low 12 mode bits).</summary>
    public UnixFileMode Permissions { get; set; }

    /// <summary>Owner user id.</summary>
    public uint Uid { get; set; }

    /// <summary>Owner group id.</summary>
    public uint Gid { get; set; }

    /// <summary>Modification time; EROFS keeps it to the nanosecond, .NET to 100 ns.</summary>
    public DateTimeOffset ModificationTime { get; set; } = DateTimeOffset.UnixEpoch;

    /// <summary>Extended attributes by full name (<c>security.capability</c>), values as raw bytes.</summary>
    public SortedDictionary<string, byte[]> Xattrs { get; } = new(StringComparer.Ordinal);

    /// <summary>A regular file's bytes in the tree's spool.</summary>
    public ContentRange Content { get; private init; }

    /// <summary>A symbolic link's target, exactly as archived.</summary>
    public string? LinkTarget { get; private init; }

    /// <summary>A device node's major number.</summary>
    public uint DeviceMajor { get; private init; }

    /// <summary>A device node's minor number.</summary>
    public uint DeviceMinor { get; private init; }

    /// <summary>A directory's entries by name (no <c>.</c> or <c>..</c>); null for other kinds.</summary>
    public Dictionary<string, Inode>? Entries { get; }

    /// <summary>A new empty directory.</summary>
    public static Inode NewDirectory() => new(InodeKind.Directory);

    /// <summary>A new regular file whose bytes are already in the spool.</summary>
    public static Inode NewFile(ContentRange content) => new(InodeKind.RegularFile) { Content = content };

    /// <summary>A new symbolic link.</summary>
    public static Inode NewSymbolicLink(string target)
    {
        ArgumentNullException.ThrowIfNull(target);
        return new Inode(InodeKind.SymbolicLink) { LinkTarget = target };
    }

    /// <summary>A new character or block device node.</summary>
    public static Inode NewDevice(InodeKind kind, uint major, uint minor)
    {
        if (kind is not (InodeKind.CharacterDevice or InodeKind.BlockDevice))
        {
            throw new ArgumentOutOfRangeException(nameof(kind), kind, "Not a device kind.");
        }

        return new Inode(kind) { DeviceMajor = major, DeviceMinor = minor };
    }

    /// <summary>A new FIFO or socket node.</summary>
    public static Inode NewSpecial(InodeKind kind)
    {
        if (kind is not (InodeKind.Fifo or InodeKind.Socket))
        {
            throw new ArgumentOutOfRangeException(nameof(kind), kind, "Not a FIFO or socket kind.");
        }

        return new Inode(kind);
    }

    /// <summary>Takes mode, owner, time and xattrs from another inode (a directory archived again).</summary>
    public void CopyAttributesFrom(Inode other)
    {
        ArgumentNullException.ThrowIfNull(other);
        Permissions = other.Permissions;
        Uid = other.Uid;
        Gid = other.Gid;
        ModificationTime = other.ModificationTime;
        Xattrs.Clear();
        foreach (var (name, value) in other.Xattrs)
        {
            Xattrs[name] = value;
        }
    }
}
