using Microsandbox.Engine;

namespace Microsandbox.Tests.Engine;

/// <summary>
/// The scripts and patches a sandbox created without starting keeps for its first start: written
/// and read back whole, with host sources made full paths, and a file that is not one refused by id.
/// </summary>
public sealed class PendingSetupTests : IDisposable
{
    private readonly TempHome _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void A_setup_reads_back_as_it_was_written_with_host_sources_made_full_paths()
    {
        var options = new SandboxOptions();
        options.Scripts["greet"] = "echo \"hello $1\"";
        options.Patches.Add(new SandboxPatch(SandboxPatchKind.WriteFile, "/etc/motd")
        {
            Content = [0, 1, 255, 10], Mode = 0x180,
        });
        options.Patches.Add(new SandboxPatch(SandboxPatchKind.CopyFromHost, "/srv/site") { Source = "relative/site" });
        options.Patches.Add(new SandboxPatch(SandboxPatchKind.Remove, "/mnt"));
        string path = Path.Join(_temp.Scratch, "setup.json");

        PendingSetup.Save(PendingSetup.From(options), path);
        PendingSetup read = PendingSetup.Load(path, "box")!;

        Assert.Equal("echo \"hello $1\"", read.Scripts["greet"]);
        Assert.Equal(3, read.Patches.Count);
        Assert.Equal(SandboxPatchKind.WriteFile, read.Patches[0].Kind);
        Assert.Equal("/etc/motd", read.Patches[0].Path);
        Assert.Equal(new byte[] { 0, 1, 255, 10 }, read.Patches[0].Content);
        Assert.Equal(0x180, read.Patches[0].Mode);
        Assert.Equal(Path.GetFullPath("relative/site"), read.Patches[1].Source);
        Assert.Equal(new SandboxPatch(SandboxPatchKind.Remove, "/mnt"), read.Patches[2]);
        Assert.False(File.Exists(path + ".tmp"));
    }

    [Fact]
    public void No_file_is_no_setup_to_come() =>
        Assert.Null(PendingSetup.Load(Path.Join(_temp.Scratch, "setup.json"), "box"));

    [Theory]
    [InlineData("{ not json")]
    [InlineData("null")]
    public void A_file_that_is_no_setup_is_SetupFileCorrupt_naming_the_file(string text)
    {
        string path = Path.Join(_temp.Scratch, "setup.json");
        File.WriteAllText(path, text);

        var ex = Assert.Throws<SandboxException>(() => PendingSetup.Load(path, "box"));

        Assert.Equal("SetupFileCorrupt", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidData, ex.Kind);
        Assert.Equal(path, ex.Target);
    }
}
