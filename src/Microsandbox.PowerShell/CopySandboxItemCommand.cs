using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Copies files and folders into, out of and between sandboxes.</para>
/// <para type="description">Copies host files and folders into a sandbox (-ToSandbox), guest files and folders to the host (-FromSandbox), or from one sandbox to another (both), keeping modes and modification times, as Copy-Item -ToSession and -FromSession do. Folders need -Recurse. Copying out never writes outside the destination, whatever links the guest holds.</para>
/// </summary>
[Cmdlet(VerbsCommon.Copy, "SandboxItem", SupportsShouldProcess = true, DefaultParameterSetName = ToSet)]
[OutputType(typeof(SandboxItem), typeof(FileInfo), typeof(DirectoryInfo))]
public sealed class CopySandboxItemCommand : SandboxCmdlet
{
    private const string ToSet = "ToSandbox";
    private const string FromSet = "FromSandbox";
    private const string BetweenSet = "SandboxToSandbox";

    /// <summary>
    /// <para type="description">What to copy: host paths (wildcards allowed) with -ToSandbox, else absolute guest paths. Binds from the pipeline and from the FullName property of piped items.</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    [Alias("FullName")]
    public string[] Path { get; set; } = [];

    /// <summary>
    /// <para type="description">Where to copy to: an absolute guest path with -ToSandbox, else a host path. An existing directory receives the items under their own names.</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 1)]
    [ValidateNotNullOrEmpty]
    public string Destination { get; set; } = "";

    /// <summary>
    /// <para type="description">The sandbox to copy into.</para>
    /// </summary>
    [Parameter(Mandatory = true, ParameterSetName = ToSet)]
    [Parameter(Mandatory = true, ParameterSetName = BetweenSet)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(SandboxNameCompleter))]
    public string ToSandbox { get; set; } = "";

    /// <summary>
    /// <para type="description">The sandbox to copy from. Binds from the Sandbox property of piped items, as Get-SandboxChildItem emits them.</para>
    /// </summary>
    [Parameter(Mandatory = true, ParameterSetName = FromSet, ValueFromPipelineByPropertyName = true)]
    [Parameter(Mandatory = true, ParameterSetName = BetweenSet, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(SandboxNameCompleter))]
    [Alias("Sandbox")]
    public string FromSandbox { get; set; } = "";

    /// <summary>
    /// <para type="description">Copy folders with everything in them. Without it a folder is refused with RecurseRequired.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter Recurse { get; set; }

    /// <summary>
    /// <para type="description">Replace read-only host files when copying out.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    /// <summary>
    /// <para type="description">Return the copied items: sandbox items, or host FileInfo and DirectoryInfo objects when copying out.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        var options = new SandboxCopyOptions { Recurse = Recurse, Force = Force };
        List<string> sources = ParameterSetName == ToSet ? ResolveHostPaths() : [.. Path];
        string into = ParameterSetName == FromSet
            ? $"'{GetUnresolvedProviderPathFromPSPath(Destination)}' on the host"
            : $"'{Destination}' in sandbox '{ToSandbox}'";
        sources = [.. sources.Where(source => ShouldProcess(
            ParameterSetName == ToSet ? $"'{source}'" : $"'{source}' in sandbox '{FromSandbox}'", $"Copy to {into}"))];
        if (sources.Count == 0)
        {
            return;
        }

        SandboxCopyResult result;
        try
        {
            result = Run((messages, token) => ParameterSetName switch
            {
                ToSet => Engine.CopyToSandboxAsync(sources, ToSandbox, Destination, options, messages, token),
                FromSet => Engine.CopyFromSandboxAsync(FromSandbox, sources,
                    GetUnresolvedProviderPathFromPSPath(Destination), options, messages, token),
                _ => Engine.CopyBetweenSandboxesAsync(FromSandbox, sources, ToSandbox, Destination, options,
                    messages, token),
            });
        }
        catch (SandboxException ex)
        {
            WriteSandboxError(ex);
            return;
        }

        foreach (SandboxException error in result.Errors)
        {
            WriteSandboxError(error);
        }

        if (PassThru)
        {
            WriteItems(result.Items);
        }
    }

    private void WriteItems(IReadOnlyList<string> items)
    {
        foreach (string item in items)
        {
            if (ParameterSetName == FromSet)
            {
                WriteObject(Directory.Exists(item) ? new DirectoryInfo(item) : new FileInfo(item));
                continue;
            }

            try
            {
                WriteObject(Run((_, token) => Engine.GetItemAsync(ToSandbox, item, followLinks: false, token)));
            }
            catch (SandboxException ex)
            {
                WriteSandboxError(ex);
            }
        }
    }

    // Host paths through the provider, so relative paths, ~ and wildcards work as in Copy-Item.
    private List<string> ResolveHostPaths()
    {
        var resolved = new List<string>();
        foreach (string path in Path)
        {
            try
            {
                var found = GetResolvedProviderPathFromPSPath(path, out ProviderInfo provider);
                if (provider.Name != "FileSystem")
                {
                    WriteSandboxError(new SandboxException("HostPathNotFileSystem", SandboxErrorKind.InvalidArgument,
                        $"'{path}' is not a file system path.", path));
                    continue;
                }

                if (found.Count == 0)
                {
                    throw new ItemNotFoundException(path);
                }

                resolved.AddRange(found);
            }
            catch (ItemNotFoundException)
            {
                WriteSandboxError(new SandboxException("HostPathNotFound", SandboxErrorKind.NotFound,
                    $"'{path}' does not exist on the host.", path));
            }
        }

        return resolved;
    }
}
