using System.Formats.Tar;
using System.Globalization;
using System.Text;

namespace Microsandbox.Tests.Images.Erofs;

/// <summary>
/// Builds a layer tar in memory with TarWriter and remembers what each path should look like
/// once the layer is applied, so a test can compare a mounted image against it. Modes are octal
/// strings, as C# has no octal literals.
/// </summary>
internal sealed class LayerTar
{
    public static readonly DateTimeOffset DefaultTime = new(2024, 5, 6, 7, 8, 9, TimeSpan.Zero);
    private readonly List<Action<TarWriter, Stream>> _writes = [];
    private readonly TarEntryFormat _format;

    public LayerTar(TarEntryFormat format = TarEntryFormat.Pax) => _format = format;

    /// <summary>What each path (relative, "" for the root) should be after this layer alone.</summary>
    public Dictionary<string, ExpectedNode> Expected { get; } = new(StringComparer.Ordinal);

    /// <summary>A tar name as a path relative to the root; "" is the root itself.</summary>
    public static string Normalize(string name) =>
        string.Join('/', name.Split('/').Where(part => part is not ("" or ".")));

    public LayerTar Directory(
        string name, string mode = "755", int uid = 0, int gid = 0, DateTimeOffset? time = null,
        Dictionary<string, byte[]>? xattrs = null)
    {
        Write(TarEntryType.Directory, name, mode, uid, gid, time, xattrs, entry => { });
        Expect(name, new ExpectedNode(ExpectedKind.Directory, mode, uid, gid, time ?? DefaultTime)
        {
            Xattrs = xattrs,
        });
        return this;
    }

    public LayerTar File(
        string name, byte[] data, string mode = "644", int uid = 0, int gid = 0,
        DateTimeOffset? time = null, Dictionary<string, byte[]>? xattrs = null)
    {
        Write(TarEntryType.RegularFile, name, mode, uid, gid, time, xattrs,
            entry => entry.DataStream = new MemoryStream(data));
        Expect(name, new ExpectedNode(ExpectedKind.File, mode, uid, gid, time ?? DefaultTime)
        {
            Data = data,
            Xattrs = xattrs,
        });
        return this;
    }

    public LayerTar File(string name, string text, string mode = "644") =>
        File(name, Encoding.UTF8.GetBytes(text), mode);

    public LayerTar Symlink(string name, string target, int uid = 0, int gid = 0, DateTimeOffset? time = null)
    {
        Write(TarEntryType.SymbolicLink, name, "777", uid, gid, time, null, entry => entry.LinkName = target);
        Expect(name, new ExpectedNode(ExpectedKind.Symlink, "777", uid, gid, time ?? DefaultTime)
        {
            Target = target,
        });
        return this;
    }

    /// <summary>A hard link: the expectation shares the target's node, so both must be one inode.</summary>
    public LayerTar HardLink(string name, string target)
    {
        Write(TarEntryType.HardLink, name, "644", 0, 0, null, null, entry => entry.LinkName = target);

        // A target from a lower layer is known only to the test that built that layer.
        if (Expected.TryGetValue(Normalize(target), out var node))
        {
            Expected[Normalize(name)] = node;
        }

        return this;
    }

    public LayerTar Device(
        string name, bool character, int major, int minor, string mode = "660", int uid = 0, int gid = 0)
    {
        var type = character ? TarEntryType.CharacterDevice : TarEntryType.BlockDevice;
        Write(type, name, mode, uid, gid, null, null, entry =>
        {
            var posix = (PosixTarEntry)entry;
            posix.DeviceMajor = major;
            posix.DeviceMinor = minor;
        });
        var kind = character ? ExpectedKind.CharacterDevice : ExpectedKind.BlockDevice;
        Expect(name, new ExpectedNode(kind, mode, uid, gid, DefaultTime) { Major = major, Minor = minor });
        return this;
    }

    public LayerTar Fifo(string name, string mode = "600")
    {
        Write(TarEntryType.Fifo, name, mode, 0, 0, null, null, entry => { });
        Expect(name, new ExpectedNode(ExpectedKind.Fifo, mode, 0, 0, DefaultTime));
        return this;
    }

    /// <summary>An empty regular file with a whiteout name; it is not expected in the image.</summary>
    public LayerTar Marker(string name)
    {
        Write(TarEntryType.RegularFile, name, "644", 0, 0, null, null, entry => { });
        return this;
    }

    /// <summary>
    /// A regular file whose xattrs go into a PAX header written byte by byte, because TarWriter
    /// writes xattr values as UTF-8 text and a capability is not text.
    /// </summary>
    public LayerTar FileWithBinaryXattrs(string name, byte[] data, Dictionary<string, byte[]> xattrs)
    {
        var records = new MemoryStream();
        foreach (var (key, value) in xattrs)
        {
            WritePaxRecord(records, "SCHILY.xattr." + key, value);
        }

        _writes.Add((writer, stream) =>
        {
            WriteRawHeader(stream, "PaxHeaders/" + name, (byte)'x', records.Length);
            stream.Write(records.GetBuffer(), 0, (int)records.Length);
            Pad(stream);
            writer.WriteEntry(new UstarTarEntry(TarEntryType.RegularFile, name)
            {
                Mode = (UnixFileMode)Convert.ToInt32("755", 8),
                ModificationTime = DefaultTime,
                DataStream = new MemoryStream(data),
            });
        });
        Expect(name, new ExpectedNode(ExpectedKind.File, "755", 0, 0, DefaultTime)
        {
            Data = data,
            Xattrs = xattrs,
        });
        return this;
    }

    /// <summary>The archive, positioned at its start.</summary>
    public MemoryStream ToStream() => new(ToArray(), writable: false);

    /// <summary>The archive bytes, end-of-archive blocks included.</summary>
    public byte[] ToArray()
    {
        using var stream = new MemoryStream();
        using (var writer = new TarWriter(stream, _format, leaveOpen: true))
        {
            foreach (var write in _writes)
            {
                write(writer, stream);
            }
        }

        return stream.ToArray();
    }

    /// <summary>A ustar header block with the given type and size, checksum included.</summary>
    internal static void WriteRawHeader(Stream destination, string name, byte type, long size)
    {
        byte[] header = new byte[512];
        Encoding.ASCII.GetBytes(name.Length > 99 ? name[..99] : name).CopyTo(header, 0);
        Octal(header, 100, 8, 420);
        Octal(header, 108, 8, 0);
        Octal(header, 116, 8, 0);
        Octal(header, 124, 12, size);
        Octal(header, 136, 12, DefaultTime.ToUnixTimeSeconds());
        header[156] = type;
        "ustar\0"u8.CopyTo(header.AsSpan(257));
        "00"u8.CopyTo(header.AsSpan(263));
        header.AsSpan(148, 8).Fill((byte)' ');
        int sum = header.Sum(b => b);
        Encoding.ASCII.GetBytes(Convert.ToString(sum, 8).PadLeft(6, '0') + "\0 ").CopyTo(header, 148);
        destination.Write(header);
    }

    private void Expect(string name, ExpectedNode node) => Expected[Normalize(name)] = node;

    /// <summary>Queues an entry; it is made at write time so every archive gets fresh data streams.</summary>
    private void Write(
        TarEntryType type, string name, string mode, int uid, int gid, DateTimeOffset? time,
        Dictionary<string, byte[]>? xattrs, Action<TarEntry> fill)
    {
        _writes.Add((writer, _) =>
        {
            TarEntry entry = _format switch
            {
                TarEntryFormat.Pax => new PaxTarEntry(type, name, TextXattrs(xattrs)),
                TarEntryFormat.Gnu => new GnuTarEntry(type, name),
                TarEntryFormat.Ustar => new UstarTarEntry(type, name),
                _ => new V7TarEntry(type, name),
            };
            entry.Mode = (UnixFileMode)Convert.ToInt32(mode, 8);
            entry.Uid = uid;
            entry.Gid = gid;
            entry.ModificationTime = time ?? DefaultTime;
            fill(entry);
            writer.WriteEntry(entry);
        });
    }

    private static Dictionary<string, string> TextXattrs(Dictionary<string, byte[]>? xattrs)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in xattrs ?? [])
        {
            result["SCHILY.xattr." + key] = Encoding.UTF8.GetString(value);
        }

        return result;
    }

    /// <summary>"LENGTH key=value\n", where LENGTH counts the whole record, its own digits too.</summary>
    private static void WritePaxRecord(Stream destination, string key, byte[] value)
    {
        byte[] body = [.. " "u8, .. Encoding.UTF8.GetBytes(key), .. "="u8, .. value, .. "\n"u8];
        int length = body.Length + 1;
        while (length != body.Length + Digits(length))
        {
            length = body.Length + Digits(length);
        }

        destination.Write(Encoding.ASCII.GetBytes(length.ToString(CultureInfo.InvariantCulture)));
        destination.Write(body);
    }

    private static int Digits(int value) => value.ToString(CultureInfo.InvariantCulture).Length;

    private static void Octal(byte[] header, int offset, int width, long value) =>
        Encoding.ASCII.GetBytes(Convert.ToString(value, 8).PadLeft(width - 1, '0') + "\0")
            .CopyTo(header, offset);

    private static void Pad(Stream stream)
    {
        long rest = stream.Length % 512;
        if (rest != 0)
        {
            stream.Write(new byte[512 - rest]);
        }
    }
}

internal enum ExpectedKind
{
    File,
    Directory,
    Symlink,
    CharacterDevice,
    BlockDevice,
    Fifo,
    Socket,
}

/// <summary>
/// What one path of an image should be (mode in octal). Paths sharing a node are hard links.
/// </summary>
internal sealed record ExpectedNode(ExpectedKind Kind, string Mode, long Uid, long Gid, DateTimeOffset Time)
{
    public byte[]? Data { get; init; }

    public string? Target { get; init; }

    public int Major { get; init; }

    public int Minor { get; init; }

    public Dictionary<string, byte[]>? Xattrs { get; init; }
}
