using System.Formats.Tar;
using System.Text;
using ZstdSharp;

namespace Microsandbox.Engine.Images.Erofs;

/// <summary>
/// The root filesystem of an image as OCI layers build it up: each layer tar is applied on top of
/// the ones before, honouring whiteouts, and the result is an <see cref="Inode"/> tree whose file
/// bytes wait in a <see cref="ContentSpool"/> until <see cref="ErofsImageBuilder"/> writes them.
/// </summary>
/// <remarks>
/// <para>Paths: entry names and hard-link targets are relative to the root; an absolute one (a
/// leading <c>/</c>) is no layer a tool writes and fails with <c>LayerPathEscapes</c>, as does one
/// that climbs above the root. Empty and <c>.</c> components are ignored and <c>..</c> is resolved
/// by name. Symlink targets may be absolute: they are stored as text and mean the guest's root.
/// Symlinks are stored, never followed: an entry whose parent path passes through a symlink
/// fails with <c>LayerPathThroughSymlink</c> (containerd would resolve the link inside the root
/// instead).</para>
/// <para>Whiteouts follow the OCI image spec: <c>.wh.NAME</c> hides NAME and <c>.wh..wh..opq</c>
/// hides all contents of its directory, in lower layers only; both are applied before any entry of
/// the same layer, so entries of that layer survive whatever the order in the tar. Other
/// <c>.wh..wh.*</c> names are AUFS bookkeeping and are skipped.</para>
/// <para>A failed layer leaves the tree part-applied; discard the tree.</para>
/// </remarks>
internal sealed class LayerTree : IDisposable
{
    private const string WhiteoutPrefix = ".wh.";
    private const string OpaqueMarker = ".wh..wh..opq";
    private const int MaxSymlinkLength = 4095;
    private readonly List<string> _droppedXattrs = [];

    /// <summary>An empty tree (a root directory, 0755, owned by root) spooling into a directory.</summary>
    public LayerTree(string spoolDirectory)
    {
        Spool = new ContentSpool(spoolDirectory);
        Root = Inode.NewDirectory();
        Root.Permissions = (UnixFileMode)0b111_101_101;
    }

    /// <summary>The root directory.</summary>
    public Inode Root { get; }

    /// <summary>Where the bytes of regular files are kept.</summary>
    public ContentSpool Spool { get; }

    /// <summary>How many layers were applied.</summary>
    public int LayerCount { get; private set; }

    /// <summary>
    /// Xattrs left out because EROFS cannot name them (a namespace other than user., trusted.,
    /// security. or the POSIX ACLs) or hold them (values over 64 KiB), as "path: name".
    /// </summary>
    public IReadOnlyList<string> DroppedXattrs => _droppedXattrs;

    /// <summary>
    /// Applies one uncompressed layer tar on top of the tree. <paramref name="layerName"/> (a
    /// digest, say) is the target of errors about the tar as a whole; entry errors name the entry.
    /// </summary>
    public async Task ApplyLayerAsync(Stream tar, string? layerName, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(tar);
        layerName ??= $"layer {LayerCount + 1}";
        var changes = await ReadLayerAsync(tar, layerName, cancellationToken).ConfigureAwait(false);

        // Whiteouts hide lower layers only, so they all land before this layer adds anything.
        foreach (var change in changes)
        {
            if (change.Action is ChangeAction.Whiteout or ChangeAction.Opaque)
            {
                // For an opaque marker the directory is the marker's parent; for a whiteout
                // it is the parent of the hidden name. Either way it is Path minus the leaf.
                if (FindDirectory(change.Path[..^1], change.Name) is not { } directory)
                {
                    continue;
                }

                if (change.Action == ChangeAction.Opaque)
                {
                    directory.Entries!.Clear();
                }
                else
                {
                    directory.Entries!.Remove(change.Path[^1]);
                }
            }
        }

        foreach (var change in changes)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Apply(change);
        }

        LayerCount++;
    }

    /// <summary>Closes the spool.</summary>
    public void Dispose() => Spool.Dispose();

    private static SandboxException Corrupt(string name, string message, Exception? inner = null) =>
        new("LayerCorrupt", SandboxErrorKind.InvalidArgument, message, name, inner);

    private static SandboxException Invalid(string errorId, string name, string message) =>
        new(errorId, SandboxErrorKind.InvalidArgument, message, name);

    /// <summary>
    /// Splits an entry name, or with <paramref name="linkTarget"/> a hard link's target, into clean
    /// components (see the remarks for the rules); the empty array is the root.
    /// </summary>
    private static string[] SplitPath(string path, string entryName, bool linkTarget = false)
    {
        if (path.Contains('\0', StringComparison.Ordinal))
        {
            throw Corrupt(entryName, $"The layer entry '{entryName}' has a NUL in its path.");
        }

        if (path.StartsWith('/'))
        {
            throw Invalid("LayerPathEscapes", entryName, linkTarget
                ? $"The hard link '{entryName}' points at the absolute path '{path}'; link targets in "
                    + "a layer are relative to the image root."
                : $"The layer entry '{entryName}' is an absolute path; entry names in a layer are "
                    + "relative to the image root.");
        }

        var parts = new List<string>();
        foreach (string part in path.Split('/'))
        {
            if (part is "" or ".")
            {
                continue;
            }

            if (part == "..")
            {
                if (parts.Count == 0)
                {
                    throw Invalid("LayerPathEscapes", entryName,
                        $"The layer entry '{entryName}' points outside the image root.");
                }

                parts.RemoveAt(parts.Count - 1);
                continue;
            }

            if (Encoding.UTF8.GetByteCount(part) > ErofsFormat.MaxNameLength)
            {
                throw Invalid("LayerNameTooLong", entryName,
                    $"The layer entry '{entryName}' has a name over {ErofsFormat.MaxNameLength} bytes.");
            }

            parts.Add(part);
        }

        return [.. parts];
    }

    /// <summary>Reads every entry of a layer, spooling file bytes, before anything is applied.</summary>
    private async Task<List<Change>> ReadLayerAsync(
        Stream tar, string layerName, CancellationToken cancellationToken)
    {
        var changes = new List<Change>();
        var reader = new LayerTarReader(tar);
        await using (reader.ConfigureAwait(false))
        {
            while (true)
            {
                (TarEntry Entry, Dictionary<string, byte[]> Xattrs)? next;
                try
                {
                    next = await reader.NextAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (Exception exception) when (IsFormatError(exception))
                {
                    throw Corrupt(layerName,
                        $"The tar of {layerName} is corrupt or truncated: {exception.Message}", exception);
                }

                if (next is not var (entry, xattrs))
                {
                    await DrainAsync(tar, layerName, cancellationToken).ConfigureAwait(false);
                    return changes;
                }

                var change = await ReadEntryAsync(entry, xattrs, cancellationToken).ConfigureAwait(false);
                if (change is not null)
                {
                    changes.Add(change);
                }
            }
        }
    }

    // Reads what follows the end-of-archive blocks: a compressed layer checks its trailer (gzip's
    // CRC-32 and length) only when read to its end, and TarReader stops at those blocks.
    private static async Task DrainAsync(Stream tar, string layerName, CancellationToken cancellationToken)
    {
        try
        {
            await tar.CopyToAsync(Stream.Null, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception exception) when (IsFormatError(exception))
        {
            throw Corrupt(layerName,
                $"The layer {layerName} is corrupt after its tar's end: {exception.Message}", exception);
        }
    }

    // What a bad tar (TarReader) or bad compressed bytes (GZipStream, ZstdSharp) throw while read.
    private static bool IsFormatError(Exception exception) =>
        exception is InvalidDataException or EndOfStreamException or FormatException or OverflowException
            or ArgumentException or ZstdException;

    private async Task<Change?> ReadEntryAsync(
        TarEntry entry, Dictionary<string, byte[]> xattrs, CancellationToken cancellationToken)
    {
        string name = entry.Name;
        if (entry.EntryType == TarEntryType.GlobalExtendedAttributes)
        {
            return null;
        }

        string[] path = SplitPath(name, name);
        if (path.Length > 0 && path[^1].StartsWith(WhiteoutPrefix, StringComparison.Ordinal))
        {
            return Whiteout(name, path);
        }

        // TarReader hands a PAX sparse file's map over as if it were the content.
        if (entry is PaxTarEntry pax && pax.ExtendedAttributes.Keys.Any(IsSparseKey))
        {
            throw Invalid("LayerEntryUnsupported", name, $"The layer entry '{name}' is a sparse file.");
        }

        Inode inode;
        switch (entry.EntryType)
        {
            case TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile:
                inode = Inode.NewFile(await SpoolAsync(entry, cancellationToken).ConfigureAwait(false));
                break;
            case TarEntryType.Directory:
                inode = Inode.NewDirectory();
                break;
            case TarEntryType.SymbolicLink:
                int targetLength = Encoding.UTF8.GetByteCount(entry.LinkName);
                if (targetLength is 0 or > MaxSymlinkLength)
                {
                    throw Invalid("LayerEntryUnsupported", name,
                        $"The symlink '{name}' needs a target of 1 to {MaxSymlinkLength} bytes.");
                }

                inode = Inode.NewSymbolicLink(entry.LinkName);
                break;
            case TarEntryType.HardLink:
                return new Change(ChangeAction.HardLink, name, path, null,
                    SplitPath(entry.LinkName, name, linkTarget: true));
            case TarEntryType.CharacterDevice or TarEntryType.BlockDevice:
                var device = (PosixTarEntry)entry;
                if (device.DeviceMajor < 0 || device.DeviceMinor < 0)
                {
                    throw Corrupt(name, $"The device '{name}' has a negative device number.");
                }

                var kind = entry.EntryType == TarEntryType.CharacterDevice
                    ? InodeKind.CharacterDevice
                    : InodeKind.BlockDevice;
                inode = Inode.NewDevice(kind, (uint)device.DeviceMajor, (uint)device.DeviceMinor);
                break;
            case TarEntryType.Fifo:
                inode = Inode.NewSpecial(InodeKind.Fifo);
                break;
            default:
                throw Invalid("LayerEntryUnsupported", name,
                    $"The layer entry '{name}' is of type {entry.EntryType}, which an image cannot hold.");
        }

        if (entry.Uid < 0 || entry.Gid < 0)
        {
            throw Corrupt(name, $"The layer entry '{name}' has a negative owner.");
        }

        inode.Permissions = (UnixFileMode)((int)entry.Mode & 0xFFF);
        inode.Uid = (uint)entry.Uid;
        inode.Gid = (uint)entry.Gid;
        inode.ModificationTime = entry.ModificationTime;
        foreach (var (xattr, value) in xattrs)
        {
            if (ErofsFormat.TrySplitXattrName(xattr, out _, out _) && value.Length <= ushort.MaxValue)
            {
                inode.Xattrs[xattr] = value;
            }
            else
            {
                _droppedXattrs.Add($"{name}: {xattr}");
            }
        }

        return new Change(ChangeAction.Put, name, path, inode, null);
    }

    private static bool IsSparseKey(string key) => key.StartsWith("GNU.sparse.", StringComparison.Ordinal);

    private static Change? Whiteout(string name, string[] path)
    {
        string marker = path[^1];
        if (marker == OpaqueMarker)
        {
            return new Change(ChangeAction.Opaque, name, path, null, null);
        }

        if (marker.StartsWith(WhiteoutPrefix + WhiteoutPrefix, StringComparison.Ordinal))
        {
            return null;
        }

        string hidden = marker[WhiteoutPrefix.Length..];
        if (hidden is "" or "." or "..")
        {
            throw Corrupt(name, $"The whiteout '{name}' names no file.");
        }

        return new Change(ChangeAction.Whiteout, name, [.. path[..^1], hidden], null, null);
    }

    private async Task<ContentRange> SpoolAsync(TarEntry entry, CancellationToken cancellationToken)
    {
        if (entry.Length == 0)
        {
            return ContentRange.Empty;
        }

        long read;
        ContentRange range;
        try
        {
            var data = entry.DataStream ?? Stream.Null;
            (range, read) = await Spool.AppendAsync(data, entry.Length, cancellationToken)
                .ConfigureAwait(false);
        }
        catch (Exception exception) when (IsFormatError(exception))
        {
            throw Corrupt(entry.Name,
                $"The data of '{entry.Name}' is corrupt: {exception.Message}", exception);
        }

        if (read != entry.Length)
        {
            throw Corrupt(entry.Name,
                $"The layer tar ends inside '{entry.Name}' ({read} of {entry.Length} bytes).");
        }

        return range;
    }

    private void Apply(Change change)
    {
        if (change.Action is ChangeAction.Whiteout or ChangeAction.Opaque)
        {
            // The marker shows its directory exists in this layer even with no entry of its own.
            EnsureDirectory(change.Path[..^1], change.Name);
            return;
        }

        if (change.Path.Length == 0)
        {
            if (change.Inode is not { Kind: InodeKind.Directory })
            {
                throw Corrupt(change.Name,
                    $"The layer entry '{change.Name}' replaces the root with a non-directory.");
            }

            Root.CopyAttributesFrom(change.Inode);
            return;
        }

        var parent = EnsureDirectory(change.Path[..^1], change.Name);
        string leaf = change.Path[^1];
        var inode = change.Inode;
        if (change.Action == ChangeAction.HardLink)
        {
            inode = FindLinkTarget(change);
        }

        var existing = parent.Entries!.GetValueOrDefault(leaf);
        if (ReferenceEquals(existing, inode))
        {
            return;
        }

        // A directory over a directory merges, keeping what lower layers put inside it.
        if (existing is { Kind: InodeKind.Directory } && inode!.Kind == InodeKind.Directory)
        {
            existing.CopyAttributesFrom(inode);
            return;
        }

        parent.Entries![leaf] = inode!;
    }

    private Inode FindLinkTarget(Change change)
    {
        string[] target = change.LinkPath!;
        var parent = target.Length == 0 ? null : FindDirectory(target[..^1], change.Name);
        var inode = parent?.Entries!.GetValueOrDefault(target[^1]);
        if (target.Length == 0 || inode is { Kind: InodeKind.Directory })
        {
            throw Invalid("LayerLinkTargetIsDirectory", change.Name,
                $"The hard link '{change.Name}' points at a directory.");
        }

        return inode ?? throw Invalid("LayerLinkTargetMissing", change.Name,
            $"The hard link '{change.Name}' points at '{string.Join('/', target)}', not in any layer yet.");
    }

    /// <summary>The directory at a path, or null when it is missing or not a directory.</summary>
    private Inode? FindDirectory(string[] path, string entryName)
    {
        var current = Root;
        foreach (string part in path)
        {
            var next = current.Entries!.GetValueOrDefault(part);
            if (next is { Kind: InodeKind.SymbolicLink })
            {
                throw ThroughSymlink(entryName, part);
            }

            if (next is not { Kind: InodeKind.Directory })
            {
                return null;
            }

            current = next;
        }

        return current;
    }

    /// <summary>The directory at a path, created (0755, root-owned) where missing.</summary>
    private Inode EnsureDirectory(string[] path, string entryName)
    {
        var current = Root;
        foreach (string part in path)
        {
            var next = current.Entries!.GetValueOrDefault(part);
            if (next is null)
            {
                next = Inode.NewDirectory();
                next.Permissions = (UnixFileMode)0b111_101_101;
                next.ModificationTime = current.ModificationTime;
                current.Entries![part] = next;
            }
            else if (next.Kind == InodeKind.SymbolicLink)
            {
                throw ThroughSymlink(entryName, part);
            }
            else if (next.Kind != InodeKind.Directory)
            {
                throw Invalid("LayerParentNotDirectory", entryName,
                    $"The layer entry '{entryName}' lies under '{part}', which is not a directory.");
            }

            current = next;
        }

        return current;
    }

    private static SandboxException ThroughSymlink(string entryName, string part) =>
        Invalid("LayerPathThroughSymlink", entryName,
            $"The layer entry '{entryName}' lies under the symlink '{part}'; symlinks are never followed.");

    private enum ChangeAction
    {
        Put,
        HardLink,
        Whiteout,
        Opaque,
    }

    /// <summary>One entry of a layer, read but not yet applied.</summary>
    private sealed record Change(
        ChangeAction Action, string Name, string[] Path, Inode? Inode, string[]? LinkPath);
}
