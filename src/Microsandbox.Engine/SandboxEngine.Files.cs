using Microsandbox.Protocol;

namespace Microsandbox.Engine;

/// <summary>Files in and out of sandboxes, done by the guest agent rather than by guest commands.</summary>
public sealed partial class SandboxEngine
{
    /// <summary>
    /// Connects to a running sandbox whose agent does file operations. Throws
    /// <c>SandboxNotRunning</c> for a sandbox that is not running.
    /// </summary>
    public async Task<SandboxConnection> ConnectFilesAsync(string name, CancellationToken cancellationToken)
    {
        SandboxRecord record = FindRecord(name);
        SandboxState state = Reconcile(record).State;
        if (state != SandboxState.Running)
        {
            throw new SandboxException("SandboxNotRunning", SandboxErrorKind.InvalidOperation,
                $"The sandbox '{name}' is {state}; start it with Start-Sandbox to reach its files.", name);
        }

        SandboxConnection connection = await SandboxConnection.ConnectAsync(ControlSocket(record), name,
            cancellationToken).ConfigureAwait(false);
        if (!connection.SupportsFiles)
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw new SandboxException("SandboxFilesNotSupported", SandboxErrorKind.NotInstalled,
                $"The agent of sandbox '{name}' predates file operations; restart the sandbox with this "
                + "module's guest assets.", name);
        }

        return connection;
    }

    /// <summary>The item at an absolute guest path, or null when nothing is there.</summary>
    public async Task<SandboxItem?> GetItemAsync(
        string name, string path, bool followLinks, CancellationToken cancellationToken)
    {
        path = GuestPath(path);
        await using SandboxConnection connection = await ConnectFilesAsync(name, cancellationToken)
            .ConfigureAwait(false);
        FileEntry? entry = await connection.StatAsync(path, followLinks, cancellationToken).ConfigureAwait(false);
        return entry is null ? null : new SandboxItem(name, path, entry);
    }

    /// <summary>
    /// The items in a guest directory, and in its subdirectories with <paramref name="recurse"/>
    /// (links are listed, not followed). A path that is a file gives that file.
    /// </summary>
    public async Task<IReadOnlyList<SandboxItem>> GetChildItemsAsync(
        string name, string path, bool recurse, CancellationToken cancellationToken)
    {
        path = GuestPath(path);
        await using SandboxConnection connection = await ConnectFilesAsync(name, cancellationToken)
            .ConfigureAwait(false);
        FileEntry top = await connection.StatAsync(path, followLinks: true, cancellationToken).ConfigureAwait(false)
            ?? throw PathNotFound(path);
        if (top.Type != FileEntryType.Directory)
        {
            return [new SandboxItem(name, path, top)];
        }

        var items = new List<SandboxItem>();
        var pending = new Queue<string>([path]);
        while (pending.TryDequeue(out string? directory))
        {
            foreach (FileEntry entry in await connection.ListAsync(directory, cancellationToken).ConfigureAwait(false))
            {
                string child = directory == "/" ? "/" + entry.Name : directory + "/" + entry.Name;
                items.Add(new SandboxItem(name, child, entry));
                if (recurse && entry.Type == FileEntryType.Directory)
                {
                    pending.Enqueue(child);
                }
            }
        }

        return items;
    }

    /// <summary>Reads a guest file (a link is followed) into <paramref name="destination"/>.</summary>
    public async Task<SandboxItem> ReadFileAsync(
        string name, string path, Stream destination, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(destination);
        path = GuestPath(path);
        await using SandboxConnection connection = await ConnectFilesAsync(name, cancellationToken)
            .ConfigureAwait(false);
        FileEntry entry = await connection.ReadFileAsync(path,
            (data, token) => destination.WriteAsync(data, token), cancellationToken).ConfigureAwait(false);
        return new SandboxItem(name, path, entry);
    }

    /// <summary>
    /// Writes <paramref name="content"/> to a guest file, created with mode 0644 when new; an
    /// existing one is replaced only with <paramref name="overwrite"/>, else <c>SandboxPathExists</c>.
    /// </summary>
    public async Task<SandboxItem> WriteFileAsync(
        string name, string path, Stream content, bool overwrite, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(content);
        path = GuestPath(path);
        await using SandboxConnection connection = await ConnectFilesAsync(name, cancellationToken)
            .ConfigureAwait(false);
        FileEntry? existing = await connection.StatAsync(path, followLinks: true, cancellationToken)
            .ConfigureAwait(false);
        FileEntry entry = await connection.WriteFileAsync(new FileRequest
        {
            Op = FileOperation.Write, Path = path, Overwrite = overwrite, Mode = existing?.Mode,
        }, (buffer, token) => content.ReadAsync(buffer, token), cancellationToken).ConfigureAwait(false);
        return new SandboxItem(name, path, entry);
    }

    /// <summary>
    /// Creates a guest directory. With <paramref name="force"/> missing parents are created and an
    /// existing directory is not an error, as <c>mkdir -p</c>.
    /// </summary>
    public async Task<SandboxItem> CreateDirectoryAsync(
        string name, string path, bool force, CancellationToken cancellationToken)
    {
        path = GuestPath(path);
        await using SandboxConnection connection = await ConnectFilesAsync(name, cancellationToken)
            .ConfigureAwait(false);
        FileEntry? entry = await connection.FileOperationAsync(new FileRequest
        {
            Op = FileOperation.MakeDirectory, Path = path, Recursive = force,
        }, cancellationToken).ConfigureAwait(false);
        return new SandboxItem(name, path, entry ?? new FileEntry());
    }

    /// <summary>
    /// Creates a guest symbolic link to <paramref name="target"/>, stored as it is; an existing file
    /// or link is replaced only with <paramref name="overwrite"/>, else <c>SandboxPathExists</c>.
    /// </summary>
    public async Task<SandboxItem> CreateSymbolicLinkAsync(
        string name, string path, string target, bool overwrite, CancellationToken cancellationToken)
    {
        path = GuestPath(path);
        await using SandboxConnection connection = await ConnectFilesAsync(name, cancellationToken)
            .ConfigureAwait(false);
        FileEntry? entry = await connection.FileOperationAsync(new FileRequest
        {
            Op = FileOperation.Symlink, Path = path, Target = target, Overwrite = overwrite,
        }, cancellationToken).ConfigureAwait(false);
        return new SandboxItem(name, path, entry ?? new FileEntry());
    }

    /// <summary>
    /// Removes a guest file, link or directory; a directory that is not empty only with
    /// <paramref name="recurse"/>, else <c>DirectoryNotEmpty</c>. Links inside are never followed.
    /// </summary>
    public async Task RemoveItemAsync(string name, string path, bool recurse, CancellationToken cancellationToken)
    {
        path = GuestPath(path);
        await using SandboxConnection connection = await ConnectFilesAsync(name, cancellationToken)
            .ConfigureAwait(false);
        await connection.FileOperationAsync(new FileRequest
        {
            Op = FileOperation.Remove, Path = path, Recursive = recurse,
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Copies host files and folders into a sandbox, keeping modes and modification times; links
    /// inside folders are copied as links. Files are owned by root in the guest.
    /// </summary>
    public async Task<SandboxCopyResult> CopyToSandboxAsync(
        IReadOnlyList<string> hostPaths, string name, string destination, SandboxCopyOptions options,
        IProgress<SandboxMessage>? progress, CancellationToken cancellationToken)
    {
        destination = GuestPath(destination);
        await using SandboxConnection connection = await ConnectFilesAsync(name, cancellationToken)
            .ConfigureAwait(false);
        var copy = new FileCopy(new HostSource(), new GuestTree(connection, keepOwner: false), options);
        return await copy.RunAsync(hostPaths, destination, progress, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Copies guest files and folders to the host, keeping permission bits (without set-id bits)
    /// and modification times. Nothing is written outside the destination: no write goes through a
    /// link, and a guest link that would lead outside the copied item is refused with
    /// <c>PathOutsideDestination</c> in the result's errors.
    /// </summary>
    public async Task<SandboxCopyResult> CopyFromSandboxAsync(
        string name, IReadOnlyList<string> paths, string hostDestination, SandboxCopyOptions options,
        IProgress<SandboxMessage>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(paths);
        ArgumentNullException.ThrowIfNull(options);
        List<string> guestPaths = [.. paths.Select(GuestPath)];
        await using SandboxConnection connection = await ConnectFilesAsync(name, cancellationToken)
            .ConfigureAwait(false);
        var copy = new FileCopy(new GuestTree(connection, keepOwner: false), new HostDestination(options.Force),
            options);
        return await copy.RunAsync(guestPaths, Path.GetFullPath(hostDestination), progress, cancellationToken)
            .ConfigureAwait(false);
    }

    /// <summary>
    /// Copies files and folders from one sandbox to another, streamed through the host a few chunks at
    /// a time; modes, owners, times and links are kept.
    /// </summary>
    public async Task<SandboxCopyResult> CopyBetweenSandboxesAsync(
        string sourceName, IReadOnlyList<string> paths, string destinationName, string destination,
        SandboxCopyOptions options, IProgress<SandboxMessage>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(paths);
        List<string> guestPaths = [.. paths.Select(GuestPath)];
        destination = GuestPath(destination);
        await using SandboxConnection from = await ConnectFilesAsync(sourceName, cancellationToken)
            .ConfigureAwait(false);
        await using SandboxConnection to = await ConnectFilesAsync(destinationName, cancellationToken)
            .ConfigureAwait(false);
        var copy = new FileCopy(new GuestTree(from, keepOwner: true), new GuestTree(to, keepOwner: true), options);
        return await copy.RunAsync(guestPaths, destination, progress, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>An absolute guest path without trailing slashes; a relative one is <c>InvalidSandboxPath</c>.</summary>
    private static string GuestPath(string path)
    {
        if (string.IsNullOrEmpty(path) || path[0] != '/')
        {
            throw new SandboxException("InvalidSandboxPath", SandboxErrorKind.InvalidArgument,
                $"'{path}' is not an absolute path; paths in a sandbox start with '/'.", path);
        }

        string trimmed = path.TrimEnd('/');
        return trimmed.Length == 0 ? "/" : trimmed;
    }

    private static SandboxException PathNotFound(string path) =>
        new("SandboxPathNotFound", SandboxErrorKind.NotFound, $"'{path}' does not exist in the sandbox.", path);
}
