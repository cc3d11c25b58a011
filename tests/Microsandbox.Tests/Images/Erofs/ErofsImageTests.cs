using System.Buffers.Binary;
using System.Formats.Tar;
using System.Text;

namespace Microsandbox.Tests.Images.Erofs;

/// <summary>
/// Layer tars in, EROFS image out, checked by fsck.erofs and by the kernel through a loop mount.
/// </summary>
public sealed class ErofsImageTests : IDisposable
{
    private readonly ImageWorkspace _workspace = new();

    public void Dispose() => _workspace.Dispose();

    /// <summary>A v2 file capability granting cap_setuid and cap_net_raw: 0x80 is not UTF-8 text.</summary>
    internal static byte[] Capability()
    {
        byte[] value = new byte[20];
        BinaryPrimitives.WriteUInt32LittleEndian(value, 0x02000001);
        BinaryPrimitives.WriteUInt32LittleEndian(value.AsSpan(4), (1u << 7) | (1u << 13));
        return value;
    }

    private static Dictionary<string, byte[]> Xattrs(params (string Name, string Value)[] pairs) =>
        pairs.ToDictionary(
            pair => pair.Name, pair => Encoding.UTF8.GetBytes(pair.Value), StringComparer.Ordinal);

    [Fact]
    public async Task Every_entry_kind_of_a_pax_layer_survives_with_its_attributes()
    {
        var older = new DateTimeOffset(2001, 2, 3, 4, 5, 6, TimeSpan.Zero);
        var layer = new LayerTar(TarEntryFormat.Pax)
            .Directory("./", mode: "755", time: older)
            .Directory("bin/", time: older)
            .File("bin/su", "#!/bin/true\n"u8.ToArray(), mode: "4755")
            .FileWithBinaryXattrs("bin/ping", "ping"u8.ToArray(), new(StringComparer.Ordinal)
            {
                ["security.capability"] = Capability(),
            })
            .Directory("srv/", mode: "2775", uid: 1000, gid: 1000,
                xattrs: Xattrs(("user.role", "shared"), ("trusted.note", "kept")))
            .Directory("tmp/", mode: "1777")
            .File("srv/empty", [], mode: "600", uid: 1000, gid: 1000)
            .File("srv/tail", new byte[5000].Select((_, i) => (byte)(i % 251)).ToArray(), time: older)
            .File("srv/exact-block", Enumerable.Repeat((byte)'b', 4096).ToArray())
            .File("srv/big-ids", "owned"u8.ToArray(), uid: 100_000, gid: 3_000_000)
            .File("srv/nobody", "n"u8.ToArray(), uid: 65534, gid: 65534)
            .File("srv/labelled", "x"u8.ToArray(), xattrs: Xattrs(("user.a", "1"), ("user.b", "two")))
            .HardLink("srv/labelled-again", "srv/labelled")
            .HardLink("bin/su-too", "bin/su")
            .HardLink("bin/su-three", "./bin/su")
            .Symlink("srv/relative", "tail")
            .Symlink("srv/absolute", "/srv/tail")
            .Symlink("srv/dangling", "../nowhere/at/all")
            .Symlink("srv/long-target", string.Concat(Enumerable.Repeat("segment/", 60)) + "end")
            .Directory("dev/")
            .Device("dev/null", character: true, 1, 3, mode: "666")
            .Device("dev/sda1", character: false, 8, 1)
            .Device("dev/wide", character: true, 4095, 1_048_575)
            .Fifo("dev/pipe", mode: "620");

        string image = await _workspace.BuildAsync(layer);

        _workspace.Verify(image, layer.Expected);
    }

    [Fact]
    public async Task Gnu_long_names_and_utf8_names_up_to_255_bytes_survive()
    {
        string deep = string.Join('/', Enumerable.Range(0, 12).Select(i => $"directory-number-{i:D2}"));
        string ascii255 = new('n', 255);
        string utf8255 = new string('é', 127) + "x";
        Assert.Equal(255, Encoding.UTF8.GetByteCount(utf8255));
        var layer = new LayerTar(TarEntryFormat.Gnu);
        string parent = "";
        foreach (string part in deep.Split('/'))
        {
            parent += part + "/";
            layer.Directory(parent);
        }

        layer.File(deep + "/" + ascii255, "long ascii name")
            .File(deep + "/" + utf8255, "long utf-8 name")
            .File("数据-🙂.txt", "emoji and CJK")
            .Symlink("to-deep", deep + "/" + ascii255);

        string image = await _workspace.BuildAsync(layer);

        _workspace.Verify(image, layer.Expected);
    }

    [Fact]
    public async Task A_directory_of_a_thousand_entries_spans_blocks_and_every_name_is_found()
    {
        var layer = new LayerTar().Directory("many/");
        // Names that sort differently as UTF-16 and as bytes, around '.' and with shared prefixes.
        string[] awkward =
            ["-dash", "+plus", "A", "a", "aa", "a.b", "é", "\uFFFD", "😀", "~tilde", "z", "Z0"];
        var names = awkward.Concat(Enumerable.Range(0, 1000 - awkward.Length)
            .Select(i => $"entry-{i * 7919 % 1000:D4}-{new string('x', i % 40)}")).ToList();
        foreach (string name in names)
        {
            layer.File("many/" + name, name);
        }

        string image = await _workspace.BuildAsync(layer);

        _workspace.Verify(image, layer.Expected);
        using var mount = MountedImage.Mount(image);
        Assert.True(PathStat.Of(Path.Join(mount.Path, "many")).Size > 3 * 4096);
        foreach (string name in names)
        {
            // Each open is a lookup: the kernel binary-searches the sorted directory blocks.
            Assert.Equal(name, File.ReadAllText(Path.Join(mount.Path, "many", name)));
        }

        Assert.False(File.Exists(Path.Join(mount.Path, "many", "entry-")));
    }

    [Fact]
    public async Task A_twenty_megabyte_file_keeps_every_byte()
    {
        // Each 8-byte word holds its own offset, so a misplaced block shows where it came from.
        byte[] data = new byte[20 * 1024 * 1024 + 123];
        for (int offset = 0; offset + 8 <= data.Length; offset += 8)
        {
            BinaryPrimitives.WriteInt64LittleEndian(data.AsSpan(offset), offset);
        }

        var layer = new LayerTar().File("big.bin", data).File("after", "small file after the big one");

        string image = await _workspace.BuildAsync(layer);

        _workspace.Verify(image, layer.Expected);
        Assert.True(new FileInfo(image).Length < data.Length + 64 * 1024);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task Random_trees_of_tails_xattrs_and_long_names_read_back(int seed)
    {
        // Random sizes put data tails, xattr areas and extended inodes at every offset of a
        // block, which is where inline data could cross a block boundary.
        var random = new Random(seed);
        string[] alphabet =
            ["a", "b", "c", "X", "Y", "Z", "0", "1", "9", "-", "_", ".", "~", "é", "€", "😀"];
        string Name()
        {
            var builder = new StringBuilder();
            int limit = random.Next(1, 256);
            while (true)
            {
                string next = alphabet[random.Next(alphabet.Length)];
                if (Encoding.UTF8.GetByteCount(builder + next) > limit)
                {
                    break;
                }

                builder.Append(next);
            }

            string name = builder.Length == 0 ? "e" : builder.ToString();
            bool special = name is "." or ".." || name.StartsWith(".wh.", StringComparison.Ordinal);
            return special ? "n" + name : name;
        }

        var layer = new LayerTar();
        var directories = new List<string> { "" };
        var used = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < 300; i++)
        {
            string parent = directories[random.Next(directories.Count)];
            string path = parent + Name();
            if (!used.Add(path))
            {
                continue;
            }

            var time = LayerTar.DefaultTime.AddSeconds(random.Next(3) == 0 ? random.Next(1_000_000) : 0);
            var xattrs = new Dictionary<string, byte[]>(StringComparer.Ordinal);
            for (int x = random.Next(4) == 0 ? random.Next(1, 6) : 0; x > 0; x--)
            {
                byte[] value = new byte[random.Next(0, 300)];
                random.NextBytes(value);
                // TarWriter writes xattr values as text, so keep them ASCII.
                string key = "user.k" + x + new string('q', random.Next(40));
                xattrs[key] = value.Select(b => (byte)('a' + b % 26)).ToArray();
            }

            switch (random.Next(10))
            {
                case 0 or 1:
                    layer.Directory(path + "/", uid: random.Next(2) * 70_000, time: time, xattrs: xattrs);
                    directories.Add(path + "/");
                    break;
                case 2:
                    layer.Symlink(path, new string('t', random.Next(1, 4000)), time: time);
                    break;
                default:
                    int size = random.Next(3) == 0 ? random.Next(4096, 20_000) : random.Next(0, 4097);
                    byte[] data = new byte[size];
                    random.NextBytes(data);
                    layer.File(path, data, gid: random.Next(2) * 100_000, time: time, xattrs: xattrs);
                    break;
            }
        }

        string image = await _workspace.BuildAsync(layer);

        _workspace.Verify(image, layer.Expected);
    }
}
