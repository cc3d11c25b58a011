using System.Buffers;
using System.Text;

namespace Microsandbox.Engine.Images.Erofs;

/// <summary>
/// Writes an uncompressed EROFS image (4 KiB blocks) from an <see cref="Inode"/> tree, so any
/// host can produce the read-only root filesystem a Linux guest mounts, with ownership, modes,
/// device nodes and xattrs intact and no root rights needed.
/// </summary>
/// <remarks>
/// Block 0 holds the superblock at byte 1024; inodes follow it back to back from byte 1152
/// (nid 36, the root) in breadth-first order, each with its inline xattrs and, when it fits in
/// the same block, the tail of its data. Whole data blocks of files, directories and long
/// symlinks come after the last inode, in the same order. Nothing is compressed or shared.
/// See <see cref="ErofsLayout"/>.
/// </remarks>
internal sealed class ErofsImageBuilder
{
    private const int CopyBufferSize = 1 << 20;

    /// <summary>The volume UUID; empty by default, so equal trees give byte-identical images.</summary>
    public Guid VolumeUuid { get; init; }

    /// <summary>The volume label (at most 16 bytes are kept).</summary>
    public string VolumeName { get; init; } = "";

    /// <summary>
    /// Applies uncompressed layer tars, bottom layer first, and writes the image to
    /// <paramref name="path"/> atomically, spooling file bytes beside it meanwhile. Returns the
    /// xattrs EROFS could not keep (see <see cref="LayerTree.DroppedXattrs"/>).
    /// </summary>
    public async Task<IReadOnlyList<string>> WriteFromLayersAsync(
        IEnumerable<Stream> layers, string path, IProgress<long>? progress,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(layers);
        ArgumentException.ThrowIfNullOrEmpty(path);
        string directory = Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".";
        using var tree = new LayerTree(directory);
        foreach (var layer in layers)
        {
            await tree.ApplyLayerAsync(layer, null, cancellationToken).ConfigureAwait(false);
        }

        await WriteAsync(tree, path, progress, cancellationToken).ConfigureAwait(false);
        return tree.DroppedXattrs;
    }

    /// <summary>
    /// Writes the image of <paramref name="tree"/> to <paramref name="path"/> through a temp file
    /// renamed into place, so a failed or cancelled write leaves no image and no temp file (and
    /// an older image at the path stays). <paramref name="progress"/> gets the bytes written.
    /// </summary>
    public Task WriteAsync(
        LayerTree tree, string path, IProgress<long>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(tree);
        return WriteAsync(tree.Root, tree.Spool, path, progress, cancellationToken);
    }

    /// <summary>Writes atomically the image of a tree whose bytes are in <paramref name="spool"/>.</summary>
    public async Task WriteAsync(
        Inode root, ContentSpool? spool, string path, IProgress<long>? progress,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(root);
        ArgumentException.ThrowIfNullOrEmpty(path);
        var layout = ErofsLayout.Plan(root, spool, cancellationToken);
        string full = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(full) ?? ".";
        string temp = Path.Join(directory, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            Directory.CreateDirectory(directory);
            var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None,
                bufferSize: 0, FileOptions.Asynchronous);
            await using (stream.ConfigureAwait(false))
            {
                await WriteAsync(layout, spool, stream, progress, cancellationToken).ConfigureAwait(false);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temp, full, overwrite: true);
        }
        catch (Exception exception)
        {
            TryDelete(temp);
            if (exception is IOException or UnauthorizedAccessException)
            {
                throw new SandboxException("ErofsWriteFailed", SandboxErrorKind.ResourceUnavailable,
                    $"The image '{full}' could not be written: {exception.Message}", full, exception);
            }

            throw;
        }
    }

    /// <summary>Writes the image to a stream, front to back, without seeking.</summary>
    public async Task WriteAsync(
        Inode root, ContentSpool? spool, Stream output, IProgress<long>? progress,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(root);
        ArgumentNullException.ThrowIfNull(output);
        var layout = ErofsLayout.Plan(root, spool, cancellationToken);
        await WriteAsync(layout, spool, output, progress, cancellationToken).ConfigureAwait(false);
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
        {
            // The write already failed; that failure is the one to report.
        }
    }

    private async Task WriteAsync(
        ErofsLayout layout, ContentSpool? spool, Stream output, IProgress<long>? progress,
        CancellationToken cancellationToken)
    {
        var writer = new ImageStreamWriter(output, progress);
        byte[] scratch = ArrayPool<byte>.Shared.Rent(CopyBufferSize);
        try
        {
            byte[] superBlock = new byte[ErofsFormat.SuperBlockSize];
            ErofsFormat.WriteSuperBlock(superBlock, (ushort)layout.Slots[0].Nid, (ulong)layout.Slots.Count,
                layout.EpochSeconds, layout.EpochNanoseconds, layout.BlockCount, VolumeUuid,
                Encoding.UTF8.GetBytes(VolumeName));
            await writer.PadToAsync(ErofsFormat.SuperBlockOffset, cancellationToken).ConfigureAwait(false);
            await writer.WriteAsync(superBlock, cancellationToken).ConfigureAwait(false);
            foreach (var slot in layout.Slots)
            {
                await writer.PadToAsync(slot.Offset, cancellationToken).ConfigureAwait(false);
                await WriteInodeAsync(writer, slot, spool, scratch, cancellationToken).ConfigureAwait(false);
            }

            long dataStart = ErofsFormat.AlignUp(layout.MetadataEnd, ErofsFormat.BlockSize);
            await writer.PadToAsync(dataStart, cancellationToken).ConfigureAwait(false);
            foreach (var slot in layout.Slots)
            {
                if (slot.BlockCount == 0)
                {
                    continue;
                }

                if (writer.Position != (long)slot.StartBlock * ErofsFormat.BlockSize)
                {
                    throw new InvalidOperationException($"The data of '{slot.Path}' is out of place.");
                }

                await WriteBlocksAsync(writer, slot, spool, scratch, cancellationToken).ConfigureAwait(false);
            }

            await writer.PadToAsync((long)layout.BlockCount * ErofsFormat.BlockSize, cancellationToken)
                .ConfigureAwait(false);
            await writer.FlushAsync(cancellationToken).ConfigureAwait(false);
            await output.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(scratch);
        }
    }

    private static async Task WriteInodeAsync(
        ImageStreamWriter writer, ErofsLayout.Slot slot, ContentSpool? spool, byte[] scratch,
        CancellationToken cancellationToken)
    {
        var inode = slot.Inode;
        ushort mode = (ushort)(ErofsFormat.TypeBits(inode.Kind) | ((int)inode.Permissions & 0xFFF));
        ushort xattrCount = slot.Xattrs.Length == 0
            ? (ushort)0
            : (ushort)((slot.Xattrs.Length - ErofsFormat.XattrHeaderSize) / 4 + 1);
        uint union = inode.Kind switch
        {
            InodeKind.CharacterDevice or InodeKind.BlockDevice =>
                ErofsFormat.EncodeDevice(inode.DeviceMajor, inode.DeviceMinor),
            InodeKind.Fifo or InodeKind.Socket => 0,
            _ => slot.StartBlock,
        };
        int headerSize = slot.Extended ? ErofsFormat.ExtendedInodeSize : ErofsFormat.CompactInodeSize;
        var header = scratch.AsMemory(0, headerSize);
        if (slot.Extended)
        {
            ErofsFormat.WriteExtendedInode(header.Span, slot.Layout, xattrCount, mode, slot.Nlink,
                (ulong)slot.Size, union, slot.Ino, inode.Uid, inode.Gid, slot.MtimeSeconds,
                slot.MtimeNanoseconds);
        }
        else
        {
            ErofsFormat.WriteCompactInode(header.Span, slot.Layout, xattrCount, mode, (ushort)slot.Nlink,
                (uint)slot.Size, union, slot.Ino, (ushort)inode.Uid, (ushort)inode.Gid);
        }

        await writer.WriteAsync(header, cancellationToken).ConfigureAwait(false);
        await writer.WriteAsync(slot.Xattrs, cancellationToken).ConfigureAwait(false);
        if (slot.InlineLength == 0)
        {
            return;
        }

        long tailStart = slot.Size - slot.InlineLength;
        var tail = scratch.AsMemory(0, slot.InlineLength);
        switch (inode.Kind)
        {
            case InodeKind.RegularFile:
                await spool!.ReadExactlyAsync(inode.Content.Offset + tailStart, tail, cancellationToken)
                    .ConfigureAwait(false);
                break;
            case InodeKind.Directory:
                var lastBlock = scratch.AsSpan(0, ErofsFormat.BlockSize);
                if (ErofsLayout.EncodeDirectoryBlock(slot, slot.BlockCount, lastBlock) != slot.InlineLength)
                {
                    throw new InvalidOperationException($"The last block of '{slot.Path}' changed size.");
                }

                break;
            case InodeKind.SymbolicLink:
                slot.LinkBytes.AsSpan((int)tailStart).CopyTo(tail.Span);
                break;
        }

        await writer.WriteAsync(tail, cancellationToken).ConfigureAwait(false);
    }

    private static async Task WriteBlocksAsync(
        ImageStreamWriter writer, ErofsLayout.Slot slot, ContentSpool? spool, byte[] scratch,
        CancellationToken cancellationToken)
    {
        long start = writer.Position;
        long blockBytes = slot.BlockCount * ErofsFormat.BlockSize;
        switch (slot.Inode.Kind)
        {
            case InodeKind.RegularFile:
                long length = Math.Min(slot.Size, blockBytes);
                for (long done = 0; done < length;)
                {
                    var buffer = scratch.AsMemory(0, (int)Math.Min(scratch.Length, length - done));
                    await spool!.ReadExactlyAsync(slot.Inode.Content.Offset + done, buffer, cancellationToken)
                        .ConfigureAwait(false);
                    await writer.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
                    done += buffer.Length;
                }

                break;
            case InodeKind.Directory:
                for (long index = 0; index < slot.BlockCount; index++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    ErofsLayout.EncodeDirectoryBlock(slot, index, scratch.AsSpan(0, ErofsFormat.BlockSize));
                    await writer.WriteAsync(scratch.AsMemory(0, ErofsFormat.BlockSize), cancellationToken)
                        .ConfigureAwait(false);
                }

                break;
            case InodeKind.SymbolicLink:
                await writer.WriteAsync(slot.LinkBytes, cancellationToken).ConfigureAwait(false);
                break;
        }

        await writer.PadToAsync(start + blockBytes, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Gathers small writes into large ones and knows where in the image it is.</summary>
    private sealed class ImageStreamWriter(Stream output, IProgress<long>? progress)
    {
        private readonly byte[] _buffer = new byte[CopyBufferSize];
        private int _used;

        public long Position { get; private set; }

        public async ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            while (!data.IsEmpty)
            {
                if (_used == _buffer.Length)
                {
                    await FlushAsync(cancellationToken).ConfigureAwait(false);
                }

                int take = Math.Min(data.Length, _buffer.Length - _used);
                data.Span[..take].CopyTo(_buffer.AsSpan(_used));
                _used += take;
                Position += take;
                data = data[take..];
            }
        }

        public async ValueTask PadToAsync(long offset, CancellationToken cancellationToken)
        {
            if (offset < Position)
            {
                throw new InvalidOperationException($"The image writer is at {Position}, past {offset}.");
            }

            while (Position < offset)
            {
                if (_used == _buffer.Length)
                {
                    await FlushAsync(cancellationToken).ConfigureAwait(false);
                }

                int take = (int)Math.Min(offset - Position, _buffer.Length - _used);
                _buffer.AsSpan(_used, take).Clear();
                _used += take;
                Position += take;
            }
        }

        public async ValueTask FlushAsync(CancellationToken cancellationToken)
        {
            if (_used > 0)
            {
                await output.WriteAsync(_buffer.AsMemory(0, _used), cancellationToken).ConfigureAwait(false);
                _used = 0;
                progress?.Report(Position);
            }
        }
    }
}
