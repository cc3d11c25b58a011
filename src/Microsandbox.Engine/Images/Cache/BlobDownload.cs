using System.Security.Cryptography;

namespace Microsandbox.Engine.Images.Cache;

/// <summary>
/// One blob being downloaded into the cache: the exclusive right to write it, and the partial file
/// that survives an interruption so the next attempt continues where this one stopped. Nothing
/// appears under the blob's digest until <see cref="CommitAsync"/> has checked every byte.
/// </summary>
public sealed class BlobDownload : IAsyncDisposable
{
    private readonly LayerCache _cache;
    private readonly FileStream _lock;
    private readonly string _partialPath;
    private bool _published;
    private FileStream? _partial;
    private IncrementalHash _hash;

    private BlobDownload(LayerCache cache, string digest, long size, FileStream held, string partialPath)
    {
        _cache = cache;
        Digest = digest;
        Size = size;
        _lock = held;
        _partialPath = partialPath;
        _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    }

    /// <summary>The digest the content must have.</summary>
    public string Digest { get; }

    /// <summary>The size the content must have.</summary>
    public long Size { get; }

    /// <summary>Bytes held so far, including those kept from an earlier, interrupted attempt.</summary>
    public long Length { get; private set; }

    /// <summary>Bytes that were already there when this download began.</summary>
    public long ResumedFrom { get; private set; }

    /// <summary>
    /// Takes the blob's lock (waiting while another process or cache instance holds it) and opens
    /// its partial file, or returns null when the blob is already cached, perhaps by that other writer.
    /// </summary>
    internal static async Task<BlobDownload?> BeginAsync(
        LayerCache cache, string digest, long size, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        string hex = ContentDigest.Hex(digest);
        FileStream? held = await AcquireLockAsync(cache, digest, hex, cancellationToken)
            .ConfigureAwait(false);
        if (held is null)
        {
            return null;
        }

        var download = new BlobDownload(cache, digest, size, held, cache.PartialPath(hex));
        try
        {
            await download.OpenPartialAsync(cancellationToken).ConfigureAwait(false);
            return download;
        }
        catch
        {
            await download.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Appends bytes received from the registry.</summary>
    public async ValueTask WriteAsync(ReadOnlyMemory<byte> content, CancellationToken cancellationToken)
    {
        if (Length + content.Length > Size)
        {
            // More bytes than the descriptor announced can only be the wrong content.
            Discard();
            throw ContentDigest.Mismatch(Digest, "(unknown: more than the announced size)",
                Length + content.Length, null);
        }

        _hash.AppendData(content.Span);
        await Partial.WriteAsync(content, cancellationToken).ConfigureAwait(false);
        Length += content.Length;
    }

    /// <summary>Throws away the bytes held (a server ignored Range, or the resume was bad).</summary>
    public void Restart()
    {
        Partial.SetLength(0);
        Partial.Position = 0;
        _hash.Dispose();
        _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Length = 0;
        ResumedFrom = 0;
    }

    /// <summary>Whether the bytes held so far are exactly the blob.</summary>
    public bool IsComplete() =>
        Length == Size && ContentDigest.FromHash(_hash.GetCurrentHash()) == Digest;

    /// <summary>
    /// Makes the blob durable and visible under its digest, or, when the bytes are not the blob,
    /// deletes them and fails with <c>BlobDigestMismatch</c>.
    /// </summary>
    public async Task CommitAsync(CancellationToken cancellationToken)
    {
        string actual = ContentDigest.FromHash(_hash.GetCurrentHash());
        if (Length != Size || actual != Digest)
        {
            long length = Length;
            Discard();
            throw ContentDigest.Mismatch(Digest, actual, length, null);
        }

        await Partial.FlushAsync(cancellationToken).ConfigureAwait(false);
        Partial.Flush(flushToDisk: true);
        await Partial.DisposeAsync().ConfigureAwait(false);
        _partial = null;
        LayerCache.Publish(_partialPath, _cache.BlobPath(Digest));
        _published = true;
    }

    /// <summary>Keeps an unfinished partial for the next attempt and releases the blob's lock.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_partial is not null)
        {
            await _partial.FlushAsync().ConfigureAwait(false);
            await _partial.DisposeAsync().ConfigureAwait(false);
            _partial = null;
        }

        _hash.Dispose();
        string lockPath = _lock.Name;
        await _lock.DisposeAsync().ConfigureAwait(false);

        // Once the blob exists, whoever takes this lock next backs off on seeing it, so the lock
        // file can go. Before that it must stay: a waiter may hold it open, and a second file at
        // the same path would let two writers in.
        if (_published)
        {
            TryDelete(lockPath);
        }
    }

    private FileStream Partial => _partial ?? throw new ObjectDisposedException(nameof(BlobDownload));

    private async Task OpenPartialAsync(CancellationToken cancellationToken)
    {
        _partial = new FileStream(_partialPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read,
            bufferSize: 0, FileOptions.Asynchronous);
        if (_partial.Length > Size)
        {
            Restart();
            return;
        }

        // The hash has to cover the kept bytes too, so they are read once before appending.
        byte[] buffer = new byte[1 << 17];
        int read;
        while ((read = await _partial.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
        {
            _hash.AppendData(buffer, 0, read);
            Length += read;
        }

        ResumedFrom = Length;
    }

    private void Discard()
    {
        _partial?.Dispose();
        _partial = null;
        File.Delete(_partialPath);
        Length = 0;
    }

    private static async Task<FileStream?> AcquireLockAsync(
        LayerCache cache, string digest, string hex, CancellationToken cancellationToken)
    {
        string lockPath = cache.LockPath(hex);
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (cache.Contains(digest))
            {
                return null;
            }

            // Exclusive: it keeps out other processes and other cache instances in this one alike.
            if (LockFile.TryTake(lockPath, exclusive: true) is not { } held)
            {
                await Task.Delay(50, cancellationToken).ConfigureAwait(false);
                continue;
            }

            if (cache.Contains(digest))
            {
                // The writer before us published it; with the blob there, the lock file can go.
                await held.DisposeAsync().ConfigureAwait(false);
                TryDelete(lockPath);
                return null;
            }

            return held;
        }
    }

    private static void TryDelete(string lockPath)
    {
        try
        {
            File.Delete(lockPath);
        }
        catch (IOException)
        {
            // Windows keeps a file that another process holds open; it is an empty file.
        }
    }
}
