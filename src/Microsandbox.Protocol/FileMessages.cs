using System.Text.Json.Serialization;

namespace Microsandbox.Protocol;

/// <summary>The operations a <see cref="FileRequest"/> may ask of the agent.</summary>
public static class FileOperation
{
    /// <summary>The entry of one path: answered by <see cref="FileResult.Entry"/>.</summary>
    public const string Stat = "stat";

    /// <summary>The entries of a directory, in <see cref="FrameType.FileEntries"/> frames.</summary>
    public const string List = "list";

    /// <summary>A file's entry, then its bytes in <see cref="FrameType.FileData"/> frames.</summary>
    public const string Read = "read";

    /// <summary>Creates or replaces a file with the bytes the host sends in <see cref="FrameType.FileData"/>.</summary>
    public const string Write = "write";

    /// <summary>Creates a directory.</summary>
    public const string MakeDirectory = "mkdir";

    /// <summary>Creates a symbolic link to <see cref="FileRequest.Target"/>.</summary>
    public const string Symlink = "symlink";

    /// <summary>Removes a file, a link or a directory (with its content when recursive).</summary>
    public const string Remove = "remove";

    /// <summary>Sets the mode, owner and modification time of an existing path.</summary>
    public const string SetAttributes = "setattr";
}

/// <summary>The types a <see cref="FileEntry"/> can have.</summary>
public static class FileEntryType
{
    /// <summary>A regular file.</summary>
    public const string File = "file";

    /// <summary>A directory.</summary>
    public const string Directory = "directory";

    /// <summary>A symbolic link; <see cref="FileEntry.Target"/> holds what it points to.</summary>
    public const string Symlink = "symlink";

    /// <summary>Anything else: a device, a socket, a FIFO.</summary>
    public const string Other = "other";
}

/// <summary>Asks the agent for one operation on a path in the guest; opens a session.</summary>
public sealed class FileRequest
{
    /// <summary>One of the <see cref="FileOperation"/> names.</summary>
    public string Op { get; init => field = value ?? ""; } = "";

    /// <summary>The absolute guest path the operation is about.</summary>
    public string Path { get; init => field = value ?? ""; } = "";

    /// <summary>For stat: report what a final symbolic link points to instead of the link.</summary>
    public bool FollowLinks { get; init; }

    /// <summary>
    /// For remove: a directory with its content. For mkdir: missing parents too, and no error if
    /// the directory exists.
    /// </summary>
    public bool Recursive { get; init; }

    /// <summary>For write and symlink: replace what is at the path instead of failing with <c>PathExists</c>.</summary>
    public bool Overwrite { get; init; }

    /// <summary>For symlink: what the link points to, stored as it is.</summary>
    public string? Target { get; init; }

    /// <summary>Permission bits (07777) to set; null keeps the default (0644 files, 0755 directories).</summary>
    public int? Mode { get; init; }

    /// <summary>Owner to set; null leaves root.</summary>
    public int? Uid { get; init; }

    /// <summary>Group to set; null leaves root's group.</summary>
    public int? Gid { get; init; }

    /// <summary>Modification time to set, in seconds since 1970 UTC; null leaves the time of the operation.</summary>
    public long? ModifiedSeconds { get; init; }

    /// <summary>Nanoseconds to add to <see cref="ModifiedSeconds"/>.</summary>
    public int ModifiedNanoseconds { get; init; }
}

/// <summary>What the guest knows of one path, as <c>lstat</c> (or <c>stat</c>) reports it.</summary>
public sealed class FileEntry
{
    /// <summary>The last component of the path.</summary>
    public string Name { get; init => field = value ?? ""; } = "";

    /// <summary>One of the <see cref="FileEntryType"/> names.</summary>
    public string Type { get; init => field = value ?? ""; } = "";

    /// <summary>Permission bits, 07777.</summary>
    public int Mode { get; init; }

    /// <summary>Size in bytes (of the link text, for a link).</summary>
    public long Size { get; init; }

    /// <summary>Modification time in seconds since 1970 UTC.</summary>
    public long ModifiedSeconds { get; init; }

    /// <summary>Nanoseconds to add to <see cref="ModifiedSeconds"/>.</summary>
    public int ModifiedNanoseconds { get; init; }

    /// <summary>Owner's user id.</summary>
    public int Uid { get; init; }

    /// <summary>Owner's group id.</summary>
    public int Gid { get; init; }

    /// <summary>For a symbolic link: what it points to, as stored.</summary>
    public string? Target { get; init; }
}

/// <summary>A batch of entries: part of a listing, or the entry of the file a read is about to send.</summary>
public sealed class FileEntries
{
    /// <summary>The entries, in the order the directory gave them.</summary>
    public IReadOnlyList<FileEntry> Entries { get; init => field = value ?? []; } = [];
}

/// <summary>A file operation succeeded.</summary>
public sealed class FileResult
{
    /// <summary>The entry of the path after the operation; absent after remove.</summary>
    public FileEntry? Entry { get; init; }
}

// A context of their own: the generator runs once per declaration, so the file messages cannot be
// added to ProtocolJsonContext from this file; ProtocolJson looks in both.
/// <summary>System.Text.Json source generation for the file messages.</summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(FileRequest))]
[JsonSerializable(typeof(FileEntries))]
[JsonSerializable(typeof(FileResult))]
internal sealed partial class FileJsonContext : JsonSerializerContext;
