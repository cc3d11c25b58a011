using Microsandbox.Engine;
using Microsandbox.Protocol;

namespace Microsandbox.Tests.Engine;

/// <summary>Copying out of a sandbox: what the guest's links and names may not do on the host.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class HostDestinationTests : IDisposable
{
    private readonly string _root = Path.Join(Path.GetTempPath(), "msb-hostdest-" + Guid.NewGuid().ToString("N"));

    public HostDestinationTests() => Directory.CreateDirectory(_root);

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private HostDestination Begin(string item)
    {
        var destination = new HostDestination(force: false);
        destination.BeginItem(Path.Join(_root, item));
        return destination;
    }

    private static FileEntry Link(string target) => new() { Type = FileEntryType.Symlink, Target = target };

    private static ValueTask<int> Empty(Memory<byte> buffer, CancellationToken token) => ValueTask.FromResult(0);

    [Theory]
    [InlineData("/etc")]
    [InlineData("../../outside")]
    [InlineData("../..")]
    [InlineData("sub/../../..")]
    [InlineData("")]
    public async Task A_link_leading_outside_the_item_is_refused(string target)
    {
        HostDestination destination = Begin("item");
        await destination.CreateDirectoryAsync(Path.Join(_root, "item"), default);
        await destination.CreateDirectoryAsync(Path.Join(_root, "item/d"), default);

        var ex = await Assert.ThrowsAsync<SandboxException>(
            () => destination.CreateSymlinkAsync(Path.Join(_root, "item/d/l"), Link(target), default));

        Assert.Equal("PathOutsideDestination", ex.ErrorId);
        Assert.False(File.Exists(Path.Join(_root, "item/d/l")) || Directory.Exists(Path.Join(_root, "item/d/l")));
    }

    [Theory]
    [InlineData("../x")]
    [InlineData("x/y")]
    [InlineData("./x")]
    public async Task A_link_within_the_item_is_made(string target)
    {
        HostDestination destination = Begin("item");
        await destination.CreateDirectoryAsync(Path.Join(_root, "item"), default);
        await destination.CreateDirectoryAsync(Path.Join(_root, "item/d"), default);

        await destination.CreateSymlinkAsync(Path.Join(_root, "item/d/l"), Link(target), default);

        Assert.Equal(target, new FileInfo(Path.Join(_root, "item/d/l")).LinkTarget);
    }

    [Theory]
    [InlineData("x")]
    [InlineData("./x")]
    [InlineData(".")]
    public async Task A_link_that_is_the_item_itself_is_refused_whatever_its_relative_target(string target)
    {
        // Its target resolves from the destination folder, beside the item: nothing of the item is there.
        HostDestination destination = Begin("item");

        var ex = await Assert.ThrowsAsync<SandboxException>(
            () => destination.CreateSymlinkAsync(Path.Join(_root, "item"), Link(target), default));

        Assert.Equal("PathOutsideDestination", ex.ErrorId);
        Assert.Null(new FileInfo(Path.Join(_root, "item")).LinkTarget);
    }

    [Fact]
    public async Task Nothing_is_written_through_a_link_in_the_destination_tree()
    {
        string outside = Path.Join(_root, "outside");
        Directory.CreateDirectory(outside);
        Directory.CreateDirectory(Path.Join(_root, "item"));
        Directory.CreateSymbolicLink(Path.Join(_root, "item/d"), outside);
        HostDestination destination = Begin("item");

        var write = await Assert.ThrowsAsync<SandboxException>(() => destination.WriteFileAsync(
            Path.Join(_root, "item/d/f"), new FileEntry { Type = FileEntryType.File, Mode = 0x1A4 }, Empty, default));
        var mkdir = await Assert.ThrowsAsync<SandboxException>(
            () => destination.CreateDirectoryAsync(Path.Join(_root, "item/d"), default));

        Assert.Equal(("PathOutsideDestination", "PathOutsideDestination"), (write.ErrorId, mkdir.ErrorId));
        Assert.Empty(Directory.GetFileSystemEntries(outside));
    }

    [Fact]
    public async Task A_file_replaces_a_link_at_its_path_instead_of_writing_through_it()
    {
        string victim = Path.Join(_root, "victim");
        File.WriteAllText(victim, "keep");
        Directory.CreateDirectory(Path.Join(_root, "item"));
        File.CreateSymbolicLink(Path.Join(_root, "item/f"), victim);
        HostDestination destination = Begin("item");

        await destination.WriteFileAsync(Path.Join(_root, "item/f"),
            new FileEntry { Type = FileEntryType.File, Mode = 0x1ED, ModifiedSeconds = 1_000_000_000 }, Empty, default);

        Assert.Equal("keep", File.ReadAllText(victim));
        var written = new FileInfo(Path.Join(_root, "item/f"));
        Assert.Null(written.LinkTarget);
        Assert.Equal(0, written.Length);
        Assert.Equal(DateTime.UnixEpoch.AddSeconds(1_000_000_000), written.LastWriteTimeUtc);
        Assert.Equal((UnixFileMode)0x1ED, File.GetUnixFileMode(written.FullName));
    }

    [Fact]
    public async Task Set_id_bits_from_the_guest_are_dropped_on_the_host()
    {
        Directory.CreateDirectory(Path.Join(_root, "item"));
        HostDestination destination = Begin("item/tool");

        await destination.WriteFileAsync(Path.Join(_root, "item/tool"),
            new FileEntry { Type = FileEntryType.File, Mode = 0xDED }, Empty, default);

        Assert.Equal((UnixFileMode)0x1ED, File.GetUnixFileMode(Path.Join(_root, "item/tool")));
    }
}
