using System.Threading.Channels;
using Microsandbox.Protocol;

namespace Microsandbox.Engine;

/// <summary>Options of a copy into, out of or between sandboxes.</summary>
public sealed class SandboxCopyOptions
{
    /// <summary>Copy directories with everything in them; without it a directory is refused.</summary>
    public bool Recurse { get; init; }

    /// <summary>Replace read-only files on the host instead of failing.</summary>
    public bool Force { get; init; }
}

/// <summary>What a copy did: the paths it created at the top, its counts, and what it refused.</summary>
public sealed class SandboxCopyResult
{
    internal SandboxCopyResult(
        IReadOnlyList<string> items, int files, long bytes, IReadOnlyList<SandboxException> errors)
    {
        Items = items;
        Files = files;
        Bytes = bytes;
        Errors = errors;
    }

    /// <summary>The destination path of each source copied, in order.</summary>
    public IReadOnlyList<string> Items { get; }

    /// <summary>How many files were written.</summary>
    public int Files { get; }

    /// <summary>How many bytes of file content were written.</summary>
    public long Bytes { get; }

    /// <summary>Sources that failed and links that were refused; the rest was copied.</summary>
    public IReadOnlyList<SandboxException> Errors { get; }
}

/// <summary>One side a copy reads from: a host folder or a sandbox.</summary>
internal interface ICopySource
{
    Task<FileEntry?> StatAsync(string path, CancellationToken cancellationToken);

    Task<IReadOnlyList<FileEntry>> ListAsync(string path, CancellationToken cancellationToken);

    Task ReadAsync(string path, FileSink sink, CancellationToken cancellationToken);

    string Join(string directory, string name);

    string NameOf(string path);

    SandboxException NotFound(string path);
}

/// <summary>One side a copy writes to: a host folder or a sandbox.</summary>
internal interface ICopyDestination
{
    Task<FileEntry?> StatAsync(string path, CancellationToken cancellationToken);

    /// <summary>Starts a copy whose top-level item is <paramref name="path"/>; links may not leave it.</summary>
    void BeginItem(string path);

    Task CreateDirectoryAsync(string path, CancellationToken cancellationToken);

    /// <summary>Gives a directory its mode and time, once its content is written.</summary>
    Task FinishDirectoryAsync(string path, FileEntry entry, CancellationToken cancellationToken);

    Task WriteFileAsync(string path, FileEntry entry, FileSource source, CancellationToken cancellationToken);

    Task CreateSymlinkAsync(string path, FileEntry entry, CancellationToken cancellationToken);

    string Join(string directory, string name);

    string ParentOf(string path);

    SandboxException NotFound(string path);
}

/// <summary>
/// Copies files, directories and links from a source to a destination, one file at a time, as
/// Copy-Item does: into an existing directory under the source's name, else to the path given.
/// </summary>
internal sealed class FileCopy(ICopySource source, ICopyDestination destination, SandboxCopyOptions options)
{
    private readonly List<SandboxException> _errors = [];
    private int _files;
    private long _bytes;

    public async Task<SandboxCopyResult> RunAsync(
        IReadOnlyList<string> paths, string target, IProgress<SandboxMessage>? progress,
        CancellationToken cancellationToken)
    {
        var items = new List<string>();
        foreach (string path in paths)
        {
            try
            {
                var clock = System.Diagnostics.Stopwatch.StartNew();
                (int files, long bytes) = (_files, _bytes);
                string item = await CopyTopAsync(path, target, cancellationToken).ConfigureAwait(false);
                items.Add(item);
                progress?.Report(new(SandboxMessageLevel.Verbose,
                    $"Copied '{path}' to '{item}': {_files - files} files, {(_bytes - bytes) / 1024.0 / 1024:0.0} MiB "
                    + $"in {clock.ElapsedMilliseconds} ms."));
            }
            catch (SandboxException ex) when (ex.ErrorId != "SandboxConnectionLost")
            {
                _errors.Add(ex);
            }
        }

        return new SandboxCopyResult(items, _files, _bytes, _errors);
    }

    private async Task<string> CopyTopAsync(string path, string target, CancellationToken cancellationToken)
    {
        FileEntry entry = await source.StatAsync(path, cancellationToken).ConfigureAwait(false)
            ?? throw source.NotFound(path);
        if (entry.Type == FileEntryType.Directory && !options.Recurse)
        {
            throw new SandboxException("RecurseRequired", SandboxErrorKind.InvalidArgument,
                $"'{path}' is a directory; use -Recurse to copy it with its content.", path);
        }

        FileEntry? existing = await destination.StatAsync(target, cancellationToken).ConfigureAwait(false);
        string item = existing?.Type == FileEntryType.Directory
            ? destination.Join(target, source.NameOf(path))
            : target;
        string parent = destination.ParentOf(target);
        if (existing is null
            && await destination.StatAsync(parent, cancellationToken).ConfigureAwait(false) is null)
        {
            throw destination.NotFound(parent);
        }

        destination.BeginItem(item);
        await CopyEntryAsync(path, entry, item, cancellationToken).ConfigureAwait(false);
        return item;
    }

    private async Task CopyEntryAsync(string from, FileEntry entry, string to, CancellationToken cancellationToken)
    {
        switch (entry.Type)
        {
            case FileEntryType.File:
                await CopyFileAsync(from, entry, to, cancellationToken).ConfigureAwait(false);
                break;
            case FileEntryType.Directory:
                await destination.CreateDirectoryAsync(to, cancellationToken).ConfigureAwait(false);
                foreach (FileEntry child in await source.ListAsync(from, cancellationToken).ConfigureAwait(false))
                {
                    // A listing comes from the guest, which may lie: a name must stay one component.
                    if (child.Name is "" or "." or ".." || child.Name.Contains('/', StringComparison.Ordinal)
                        || child.Name.Contains('\0', StringComparison.Ordinal))
                    {
                        _errors.Add(new SandboxException("PathOutsideDestination", SandboxErrorKind.PermissionDenied,
                            $"'{from}' lists an entry named '{child.Name}', which is not a file name; skipped.", from));
                        continue;
                    }

                    try
                    {
                        await CopyEntryAsync(source.Join(from, child.Name), child, destination.Join(to, child.Name),
                            cancellationToken).ConfigureAwait(false);
                    }
                    catch (SandboxException ex) when (ex.ErrorId == "PathOutsideDestination")
                    {
                        // A refused link is reported, and the rest of the tree is still copied.
                        _errors.Add(ex);
                    }
                }

                await destination.FinishDirectoryAsync(to, entry, cancellationToken).ConfigureAwait(false);
                break;
            case FileEntryType.Symlink:
                await destination.CreateSymlinkAsync(to, entry, cancellationToken).ConfigureAwait(false);
                break;
            default:
                _errors.Add(new SandboxException("ItemTypeNotCopied", SandboxErrorKind.InvalidArgument,
                    $"'{from}' is a device, socket or FIFO; only files, directories and links are copied.", from));
                break;
        }
    }

    // The reader fills a small bounded pipe that the writer drains, so a copy holds a few chunks
    // in memory whatever the file's size, and the slower side sets the pace.
    private async Task CopyFileAsync(string from, FileEntry entry, string to, CancellationToken cancellationToken)
    {
        var pipe = new ChunkPipe();
        using var abort = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        Task reading = Task.Run(async () =>
        {
            try
            {
                await source.ReadAsync(from, pipe.WriteAsync, abort.Token).ConfigureAwait(false);
                pipe.Complete(null);
            }
            catch (Exception ex)
            {
                pipe.Complete(ex);
                throw;
            }
        }, CancellationToken.None);
        try
        {
            await destination.WriteFileAsync(to, entry, pipe.ReadAsync, abort.Token).ConfigureAwait(false);
        }
        catch
        {
            await abort.CancelAsync().ConfigureAwait(false);
            try
            {
                await reading.ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is SandboxException or OperationCanceledException or ChannelClosedException)
            {
                // The write's failure is the one to report.
            }

            throw;
        }

        await reading.ConfigureAwait(false);
        _files++;
        _bytes += pipe.Bytes;
    }

    /// <summary>A bounded queue of chunks between a pushing reader and a pulling writer.</summary>
    private sealed class ChunkPipe
    {
        private readonly Channel<byte[]> _chunks = Channel.CreateBounded<byte[]>(4);
        private byte[] _current = [];
        private int _offset;

        public long Bytes { get; private set; }

        public async ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            Bytes += data.Length;
            await _chunks.Writer.WriteAsync(data.ToArray(), cancellationToken).ConfigureAwait(false);
        }

        public void Complete(Exception? error) => _chunks.Writer.TryComplete(error);

        public async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken)
        {
            while (_offset == _current.Length)
            {
                if (!await _chunks.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
                {
                    return 0;
                }

                _current = await _chunks.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
                _offset = 0;
            }

            int n = Math.Min(buffer.Length, _current.Length - _offset);
            _current.AsMemory(_offset, n).CopyTo(buffer);
            _offset += n;
            return n;
        }
    }
}
