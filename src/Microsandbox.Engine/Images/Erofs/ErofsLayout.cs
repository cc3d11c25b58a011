using System.Buffers.Binary;

namespace Microsandbox.Engine.Images.Erofs;

/// <summary>
/// Where every inode and data block of an image goes, decided before a byte is written: nids,
/// compact or extended inodes, plain or tail-inline data, directory blocks and block addresses.
/// </summary>
internal sealed class ErofsLayout
{
    private const int Block = ErofsFormat.BlockSize;
    private const int MaxSymlinkLength = 4095;

    private ErofsLayout(
        List<Slot> slots, long metadataEnd, uint blockCount, long epochSeconds, uint epochNanos)
    {
        Slots = slots;
        MetadataEnd = metadataEnd;
        BlockCount = blockCount;
        EpochSeconds = epochSeconds;
        EpochNanoseconds = epochNanos;
    }

    /// <summary>The inodes in on-disk order; the first is the root.</summary>
    public IReadOnlyList<Slot> Slots { get; }

    /// <summary>The byte just past the last inode; data blocks start at the next block.</summary>
    public long MetadataEnd { get; }

    /// <summary>The image size in blocks.</summary>
    public uint BlockCount { get; }

    /// <summary>The time every compact inode has.</summary>
    public long EpochSeconds { get; }

    /// <summary>The nanoseconds of <see cref="EpochSeconds"/>.</summary>
    public uint EpochNanoseconds { get; }

    /// <summary>Lays out the tree under <paramref name="root"/>; refuses what EROFS cannot hold.</summary>
    public static ErofsLayout Plan(Inode root, ContentSpool? spool, CancellationToken cancellationToken)
    {
        if (root.Kind != InodeKind.Directory)
        {
            throw Invalid("ErofsRootNotDirectory", "The root of an image must be a directory.", "/");
        }

        var slots = CollectSlots(root, cancellationToken);
        foreach (var slot in slots)
        {
            Measure(slot, spool);
        }

        var (epochSeconds, epochNanoseconds) = ChooseEpoch(slots);
        foreach (var slot in slots)
        {
            slot.Extended = slot.Inode.Uid > ushort.MaxValue || slot.Inode.Gid > ushort.MaxValue
                || slot.Nlink > ushort.MaxValue || slot.Size > uint.MaxValue
                || slot.MtimeSeconds != epochSeconds || slot.MtimeNanoseconds != epochNanoseconds;
        }

        // The superblock ends at byte 1152, which is nid 36: the root, whose nid must fit 16 bits.
        long position = ErofsFormat.SuperBlockOffset + ErofsFormat.SuperBlockSize;
        uint ino = 0;
        foreach (var slot in slots)
        {
            position = Place(slot, position);
            slot.Ino = ++ino;
        }

        long nextBlock = ErofsFormat.AlignUp(position, Block) / Block;
        foreach (var slot in slots)
        {
            if (slot.BlockCount > 0)
            {
                slot.StartBlock = (uint)Math.Min(nextBlock, uint.MaxValue);
                nextBlock += slot.BlockCount;
            }
            else
            {
                // What mkfs.erofs writes: no address for a tail-only inode, 0 for an empty one.
                bool inline = slot.Layout == ErofsFormat.LayoutFlatInline;
                slot.StartBlock = inline ? ErofsFormat.NullBlockAddress : 0;
            }
        }

        if (nextBlock > uint.MaxValue)
        {
            throw Invalid("ErofsImageTooLarge",
                "The image would exceed 16 TiB, the reach of 32-bit block addresses.", "/");
        }

        return new ErofsLayout(slots, position, (uint)nextBlock, epochSeconds, epochNanoseconds);
    }

    /// <summary>
    /// Encodes directory block <paramref name="blockIndex"/> of <paramref name="slot"/>: dirents
    /// first, then the names they point at (not NUL-terminated). Returns the bytes used.
    /// </summary>
    public static int EncodeDirectoryBlock(Slot slot, long blockIndex, Span<byte> block)
    {
        var entries = slot.Entries!;
        var starts = slot.DirectoryBlockStarts;
        int start = starts[(int)blockIndex];
        int end = blockIndex + 1 < starts.Count ? starts[(int)blockIndex + 1] : entries.Count;
        block.Clear();
        int nameOffset = (end - start) * ErofsFormat.DirentSize;
        for (int i = start; i < end; i++)
        {
            var entry = entries[i];
            ErofsFormat.WriteDirent(block[((i - start) * ErofsFormat.DirentSize)..], entry.Target.Nid,
                (ushort)nameOffset, ErofsFormat.FileType(entry.Target.Inode.Kind));
            entry.Name.CopyTo(block[nameOffset..]);
            nameOffset += entry.Name.Length;
        }

        return nameOffset;
    }

    private static SandboxException Invalid(string errorId, string message, string path) =>
        new(errorId, SandboxErrorKind.InvalidArgument, message, path);

    /// <summary>Numbers the inodes breadth first from the root, counting links and sorting entries.</summary>
    private static List<Slot> CollectSlots(Inode root, CancellationToken cancellationToken)
    {
        var rootSlot = new Slot(root, "/") { Nlink = 2 };
        rootSlot.Parent = rootSlot;
        var slots = new List<Slot> { rootSlot };
        var byInode = new Dictionary<Inode, Slot>(ReferenceEqualityComparer.Instance) { [root] = rootSlot };
        for (int i = 0; i < slots.Count; i++)
        {
            var slot = slots[i];
            if (slot.Inode.Entries is not { } children)
            {
                continue;
            }

            cancellationToken.ThrowIfCancellationRequested();
            var entries = new List<DirEntry>(children.Count + 2)
            {
                new("."u8.ToArray(), slot),
                new(".."u8.ToArray(), slot.Parent!),
            };
            foreach (var (name, child) in children)
            {
                string path = slot.Path == "/" ? "/" + name : slot.Path + "/" + name;
                byte[] nameBytes = CheckName(name, path);
                if (byInode.TryGetValue(child, out var target))
                {
                    if (child.Kind == InodeKind.Directory)
                    {
                        throw Invalid("ErofsDirectoryLinked",
                            $"The directory '{target.Path}' is also at '{path}'; a directory has one parent.",
                            path);
                    }

                    target.Nlink++;
                }
                else
                {
                    target = new Slot(child, path) { Nlink = 1 };
                    if (child.Kind == InodeKind.Directory)
                    {
                        target.Parent = slot;
                        target.Nlink = 2;
                        slot.Nlink++;
                    }

                    byInode[child] = target;
                    slots.Add(target);
                }

                entries.Add(new DirEntry(nameBytes, target));
            }

            // Lookups binary-search names as unsigned bytes, "." and ".." included.
            entries.Sort(static (a, b) => a.Name.AsSpan().SequenceCompareTo(b.Name));
            slot.Entries = entries;
        }

        return slots;
    }

    private static byte[] CheckName(string name, string path)
    {
        if (name.Length == 0 || name is "." or ".." || name.Contains('/', StringComparison.Ordinal)
            || name.Contains('\0', StringComparison.Ordinal)
            || !ErofsFormat.TryEncodeName(name, out byte[] bytes))
        {
            throw Invalid("ErofsNameInvalid", $"'{path}' has a name a directory cannot hold.", path);
        }

        if (bytes.Length > ErofsFormat.MaxNameLength)
        {
            throw Invalid("ErofsNameInvalid",
                $"'{path}' has a name of {bytes.Length} bytes; the limit is {ErofsFormat.MaxNameLength}.",
                path);
        }

        return bytes;
    }

    /// <summary>Sizes an inode's data, encodes its xattrs and splits its time.</summary>
    private static void Measure(Slot slot, ContentSpool? spool)
    {
        var inode = slot.Inode;
        switch (inode.Kind)
        {
            case InodeKind.RegularFile:
                slot.Size = inode.Content.Length;
                if (slot.Size > 0 && spool is null)
                {
                    throw new ArgumentException(
                        $"'{slot.Path}' has content but there is no spool.", nameof(spool));
                }

                break;
            case InodeKind.Directory:
                slot.Size = PackDirectory(slot);
                break;
            case InodeKind.SymbolicLink:
                if (!ErofsFormat.TryEncodeName(inode.LinkTarget!, out byte[] target)
                    || target.Length is 0 or > MaxSymlinkLength || target.Contains((byte)0))
                {
                    throw Invalid("ErofsSymlinkInvalid",
                        $"The symlink '{slot.Path}' needs a target of 1 to {MaxSymlinkLength} bytes, no NUL.",
                        slot.Path);
                }

                slot.LinkBytes = target;
                slot.Size = target.Length;
                break;
            case InodeKind.CharacterDevice or InodeKind.BlockDevice:
                if (!ErofsFormat.IsEncodableDevice(inode.DeviceMajor, inode.DeviceMinor))
                {
                    throw Invalid("ErofsDeviceNumberTooLarge",
                        $"The device '{slot.Path}' ({inode.DeviceMajor}:{inode.DeviceMinor}) exceeds "
                        + "the 12-bit major and 20-bit minor Linux encodes.", slot.Path);
                }

                break;
        }

        slot.Xattrs = EncodeXattrs(inode, slot.Path);
        long ticks = inode.ModificationTime.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks;
        slot.MtimeSeconds = Math.DivRem(ticks, TimeSpan.TicksPerSecond, out long remainder);
        if (remainder < 0)
        {
            slot.MtimeSeconds--;
            remainder += TimeSpan.TicksPerSecond;
        }

        slot.MtimeNanoseconds = (uint)(remainder * 100);
    }

    /// <summary>The inline xattr area: a 12-byte header, then 4-byte aligned entries.</summary>
    private static byte[] EncodeXattrs(Inode inode, string path)
    {
        // The kernel refuses a header with no entry, so no xattrs means no area at all.
        if (inode.Xattrs.Count == 0)
        {
            return [];
        }

        var entries = new List<(byte Index, byte[] Suffix, byte[] Value)>(inode.Xattrs.Count);
        foreach (var (name, value) in inode.Xattrs)
        {
            if (!ErofsFormat.TrySplitXattrName(name, out byte index, out byte[] suffix))
            {
                throw Invalid("ErofsXattrUnsupported",
                    $"'{path}' has the xattr '{name}'; EROFS keeps user., trusted., security. and ACL names.",
                    path);
            }

            if (value.Length > ushort.MaxValue)
            {
                throw Invalid("ErofsXattrTooLarge",
                    $"The xattr '{name}' of '{path}' has {value.Length} bytes; the limit is 65535.",
                    path);
            }

            entries.Add((index, suffix, value));
        }

        entries.Sort(static (a, b) => a.Index != b.Index
            ? a.Index.CompareTo(b.Index)
            : a.Suffix.AsSpan().SequenceCompareTo(b.Suffix));
        long size = ErofsFormat.XattrHeaderSize;
        foreach (var (_, suffix, value) in entries)
        {
            size += XattrEntrySize(suffix, value);
        }

        // i_xattr_icount counts the header as one and each further 4 bytes as one, in 16 bits.
        if ((size - ErofsFormat.XattrHeaderSize) / 4 + 1 > ushort.MaxValue)
        {
            throw Invalid("ErofsXattrTooLarge",
                $"The xattrs of '{path}' exceed the 256 KiB an inode holds.", path);
        }

        byte[] area = new byte[size];
        int at = ErofsFormat.XattrHeaderSize;
        foreach (var (index, suffix, value) in entries)
        {
            area[at] = (byte)suffix.Length;
            area[at + 1] = index;
            BinaryPrimitives.WriteUInt16LittleEndian(area.AsSpan(at + 2), (ushort)value.Length);
            suffix.CopyTo(area, at + ErofsFormat.XattrEntryHeaderSize);
            value.CopyTo(area, at + ErofsFormat.XattrEntryHeaderSize + suffix.Length);
            at += XattrEntrySize(suffix, value);
        }

        return area;
    }

    private static int XattrEntrySize(byte[] suffix, byte[] value) =>
        (int)ErofsFormat.AlignUp(ErofsFormat.XattrEntryHeaderSize + suffix.Length + value.Length, 4);

    /// <summary>
    /// The most common modification time becomes the superblock epoch, which compact inodes
    /// inherit; any other time needs an extended inode. Layers often stamp every file alike.
    /// </summary>
    private static (long Seconds, uint Nanoseconds) ChooseEpoch(List<Slot> slots)
    {
        var counts = new Dictionary<(long, uint), int>();
        foreach (var slot in slots)
        {
            var key = (slot.MtimeSeconds, slot.MtimeNanoseconds);
            counts[key] = counts.GetValueOrDefault(key) + 1;
        }

        return counts.OrderByDescending(pair => pair.Value).ThenBy(pair => pair.Key).First().Key;
    }

    /// <summary>
    /// Places one inode at or after <paramref name="position"/> and returns where the next may go.
    /// The data tail is inlined after the inode and its xattrs when it fits in the same block
    /// (the kernel refuses inline data that crosses a block); otherwise the tail gets a block.
    /// </summary>
    private static long Place(Slot slot, long position)
    {
        int inodeSize = slot.Extended ? ErofsFormat.ExtendedInodeSize : ErofsFormat.CompactInodeSize;
        position = ErofsFormat.AlignUp(position, ErofsFormat.InodeSlotSize);

        // The kernel can read an inode split across blocks, but one in a block is simpler for every reader.
        if (position % Block + inodeSize > Block)
        {
            position = ErofsFormat.AlignUp(position, Block);
        }

        long fixedSize = inodeSize + slot.Xattrs.Length;
        bool hasData = slot.Inode.Kind
            is InodeKind.RegularFile or InodeKind.Directory or InodeKind.SymbolicLink;
        int tail = hasData ? (int)(slot.Size % Block) : 0;
        slot.Layout = ErofsFormat.LayoutFlatPlain;
        if (tail > 0)
        {
            bool fitsHere = (position + fixedSize) % Block + tail <= Block;

            // Moving to a fresh block wastes the gap; a block of its own wastes Block - tail.
            long gap = Block - position % Block;
            bool fitsInFreshBlock = fixedSize + tail <= Block && gap < Block - tail;
            if (!fitsHere && fitsInFreshBlock)
            {
                position = ErofsFormat.AlignUp(position, Block);
            }

            if (fitsHere || fitsInFreshBlock)
            {
                slot.Layout = ErofsFormat.LayoutFlatInline;
                slot.InlineLength = tail;
            }
        }

        slot.Offset = position;
        if (hasData)
        {
            slot.BlockCount = slot.Layout == ErofsFormat.LayoutFlatInline
                ? slot.Size / Block
                : (slot.Size + Block - 1) / Block;
        }

        return position + fixedSize + slot.InlineLength;
    }

    /// <summary>
    /// Splits a directory's entries into blocks and returns its size: full blocks plus the used
    /// part of the last one. Entries fill a block greedily and never straddle two blocks.
    /// </summary>
    private static long PackDirectory(Slot slot)
    {
        var entries = slot.Entries!;
        var starts = new List<int> { 0 };
        int used = 0;
        for (int i = 0; i < entries.Count; i++)
        {
            int need = ErofsFormat.DirentSize + entries[i].Name.Length;
            if (used + need > Block)
            {
                starts.Add(i);
                used = 0;
            }

            used += need;
        }

        slot.DirectoryBlockStarts = starts;
        return (long)(starts.Count - 1) * Block + used;
    }

    /// <summary>One name in a directory.</summary>
    internal readonly record struct DirEntry(byte[] Name, Slot Target);

    /// <summary>One on-disk inode and the decisions about it.</summary>
    internal sealed class Slot(Inode inode, string path)
    {
        public Inode Inode { get; } = inode;

        /// <summary>The first path the inode was found at, for error messages.</summary>
        public string Path { get; } = path;

        public Slot? Parent { get; set; }

        public uint Nlink { get; set; }

        /// <summary>For a directory, its entries in on-disk order, "." and ".." included.</summary>
        public List<DirEntry>? Entries { get; set; }

        /// <summary>For a directory, the index of the first entry of each block.</summary>
        public List<int> DirectoryBlockStarts { get; set; } = [];

        /// <summary>Data bytes: file content, directory blocks or symlink target.</summary>
        public long Size { get; set; }

        public byte[] LinkBytes { get; set; } = [];

        public byte[] Xattrs { get; set; } = [];

        public long MtimeSeconds { get; set; }

        public uint MtimeNanoseconds { get; set; }

        public bool Extended { get; set; }

        public byte Layout { get; set; }

        /// <summary>Byte offset of the inode in the image.</summary>
        public long Offset { get; set; }

        /// <summary>The inode number directories refer to: its offset in 32-byte slots.</summary>
        public ulong Nid => (ulong)(Offset / ErofsFormat.InodeSlotSize);

        /// <summary>Bytes of data tail stored right after the inode and its xattrs.</summary>
        public int InlineLength { get; set; }

        public uint StartBlock { get; set; }

        public long BlockCount { get; set; }

        /// <summary>The 32-bit inode number for stat on 32-bit hosts.</summary>
        public uint Ino { get; set; }
    }
}
