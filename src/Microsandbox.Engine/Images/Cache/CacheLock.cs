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
        FileStream file = await LockFile.TakeAsync(path, exclusive, exclusive
                ? "Waiting for pulls and imports in progress to finish before removing."
                : "Waiting for an image removal in progress to finish.", progress, cancellationToken)
            .ConfigureAwait(false);
        return new CacheLock(file);
    }

    /// <summary>Takes the lock, blocking the calling thread until the holders in the way are done.</summary>
    public static CacheLock Take(LayerCache cache, bool exclusive, IProgress<SandboxMessage>? progress) =>
        TakeAsync(cache, exclusive, progress, CancellationToken.None).GetAwaiter().GetResult();

    /// <inheritdoc/>
    public void Dispose() => _file.Dispose();
}
