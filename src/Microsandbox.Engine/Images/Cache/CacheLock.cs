namespace Microsandbox.Engine.Images.Cache;

/// <summary>
/// Orders the cache's users against its collector, across processes: pulls and imports hold the
/// lock shared while they find, fetch and record blobs, so any number of them run at once;
/// a removal holds it alone while it deletes, so it never takes a blob that a pull has just
/// found cached but not yet recorded under a reference. The system drops the lock if its
/// holder dies.
/// </summary>
internal sealed class CacheLock : IDisposable
{
    private readonly FileStream _file;

    private CacheLock(FileStream file) => _file = file;

    /// <summary>
    /// Takes the lock, shared or alone, waiting for the holders that stand in the way; says once
    /// through <paramref name="progress"/> that it waits.
    /// </summary>
    public static async Task<CacheLock> TakeAsync(
        LayerCache cache, bool exclusive, IProgress<SandboxMessage>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(cache);
        Directory.CreateDirectory(cache.Root);
        string path = Path.Join(cache.Root, "cache.lock");
        bool told = false;
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            try
            {
                // A shared lock is a read-only open that shares (LOCK_SH on Unix); the collector's
                // is a write open that shares nothing (LOCK_EX).
                return new CacheLock(exclusive
                    ? new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, bufferSize: 0)
                    : OpenShared(path));
            }
            catch (IOException e) when (BlobDownload.IsHeldElsewhere(e))
            {
                if (!told)
                {
                    told = true;
                    progress?.Report(new(SandboxMessageLevel.Verbose, exclusive
                        ? "Waiting for pulls and imports in progress to finish before removing."
                        : "Waiting for an image removal in progress to finish."));
                }

                await Task.Delay(100, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Takes the lock, blocking the calling thread until the holders in the way are done.</summary>
    public static CacheLock Take(LayerCache cache, bool exclusive, IProgress<SandboxMessage>? progress) =>
        TakeAsync(cache, exclusive, progress, CancellationToken.None).GetAwaiter().GetResult();

    /// <inheritdoc/>
    public void Dispose() => _file.Dispose();

    private static FileStream OpenShared(string path)
    {
        if (!File.Exists(path))
        {
            // Created by a write open first: a read-only open cannot create the file.
            using (new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite,
                bufferSize: 0))
            {
            }
        }

        return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0);
    }
}
