using System.Buffers;
using Microsoft.Win32.SafeHandles;

namespace Microsandbox.Engine.Images.Erofs;

/// <summary>
/// An append-only temp file holding the bytes of every regular file of a tree, so a layer of any
/// size is applied with bounded memory. Bytes of files that a later layer replaces stay in the
/// file as dead space until the spool is disposed.
/// </summary>
internal sealed class ContentSpool : IDisposable
{
    private const int CopyBufferSize = 1 << 20;
    private readonly SafeFileHandle _handle;
    private long _length;

    /// <summary>Creates the spool file in <paramref name="directory"/>, ideally beside the image.</summary>
    public ContentSpool(string directory)
    {
        Directory.CreateDirectory(directory);
        Path = System.IO.Path.Join(directory, $".msb-spool-{Guid.NewGuid():N}.tmp");

        // Unix lets an open file lose its name, so a crash leaves nothing behind; Windows gets
        // the same from delete-on-close.
        var options = OperatingSystem.IsWindows() ? FileOptions.DeleteOnClose : FileOptions.None;
        _handle = File.OpenHandle(Path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, options);
        if (!OperatingSystem.IsWindows())
        {
            File.Delete(Path);
        }
    }

    /// <summary>Where the spool was created (already unlinked on Unix).</summary>
    public string Path { get; }

    /// <summary>Bytes appended so far, live or dead.</summary>
    public long Length => _length;

    /// <summary>
    /// Appends exactly <paramref name="expectedLength"/> bytes from <paramref name="source"/>;
    /// returns how many it could read, which is less when the source ends early.
    /// </summary>
    public async Task<(ContentRange Range, long Read)> AppendAsync(
        Stream source, long expectedLength, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(source);
        long start = _length;
        long read = 0;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(CopyBufferSize);
        try
        {
            while (read < expectedLength)
            {
                int want = (int)Math.Min(buffer.Length, expectedLength - read);
                int got = await source.ReadAsync(buffer.AsMemory(0, want), cancellationToken)
                    .ConfigureAwait(false);
                if (got == 0)
                {
                    break;
                }

                var chunk = buffer.AsMemory(0, got);
                await RandomAccess.WriteAsync(_handle, chunk, start + read, cancellationToken)
                    .ConfigureAwait(false);
                read += got;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        _length = start + read;
        return (new ContentRange(start, read), read);
    }

    /// <summary>Reads part of a stored range into <paramref name="destination"/>.</summary>
    public async ValueTask ReadExactlyAsync(
        long offset, Memory<byte> destination, CancellationToken cancellationToken)
    {
        int done = 0;
        while (done < destination.Length)
        {
            var rest = destination[done..];
            int got = await RandomAccess.ReadAsync(_handle, rest, offset + done, cancellationToken)
                .ConfigureAwait(false);
            if (got == 0)
            {
                throw new EndOfStreamException("The content spool ended before a stored file's last byte.");
            }

            done += got;
        }
    }

    /// <summary>Closes the spool; the file is gone once the handle is.</summary>
    public void Dispose() => _handle.Dispose();
}
