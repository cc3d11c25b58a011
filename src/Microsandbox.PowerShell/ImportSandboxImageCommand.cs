using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Imports images into the layer cache from OCI image layouts or docker save archives, offline.</para>
/// <para type="description">Reads an OCI image layout (a folder, or a tar or gzip tar of one) or a docker save archive, copies the image for this host's platform into the layer cache with every blob checked against its digest, builds its EROFS base, and records it under its reference, as a pull would. No registry is contacted.</para>
/// </summary>
[Cmdlet(VerbsData.Import, "SandboxImage", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(SandboxImageInfo))]
public sealed class ImportSandboxImageCommand : SandboxCmdlet
{
    /// <summary>
    /// <para type="description">Paths of the layout folders or archive files to import, relative to the current location. No wildcards.</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true,
        ValueFromPipelineByPropertyName = true)]
    [Alias("FullName", "PSPath")]
    [ValidateNotNullOrEmpty]
    public string[] Path { get; set; } = [];

    /// <summary>
    /// <para type="description">The reference to record the image under, such as registry.example/team/app:1.0. Also chooses the image when the export holds several. Without a tag, a layout's own tag is used. Omitted, the export's own names are used.</para>
    /// </summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Reference { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        foreach (string given in Path)
        {
            if (FileSystemPath(given) is not { } path)
            {
                continue;
            }

            if (!ShouldProcess(path, Reference is null ? "Import image" : $"Import image as {Reference}"))
            {
                continue;
            }

            var view = new LayerProgressView(this, path, "Importing");
            try
            {
                IReadOnlyList<SandboxImageInfo> images = RunWithLayers((messages, layers, token) =>
                    Engine.Images.ImportAsync(path, Reference, layers, messages, token), view.Update);
                WriteObject(images, enumerateCollection: true);
            }
            catch (SandboxException ex)
            {
                WriteSandboxError(ex);
            }
            finally
            {
                // A stopping pipeline refuses writes, and its host clears the bars itself.
                if (!Stopping)
                {
                    view.Complete();
                }
            }
        }
    }

    // The file-system path a PowerShell path names, relative to the current location; a path on
    // another provider or an unknown drive is a non-terminating ImportPathNotFound.
    private string? FileSystemPath(string given)
    {
        try
        {
            string path = SessionState.Path.GetUnresolvedProviderPathFromPSPath(
                given, out ProviderInfo provider, out _);
            if (provider.ImplementingType == typeof(Microsoft.PowerShell.Commands.FileSystemProvider))
            {
                return path;
            }
        }
        catch (Exception e) when (e is ItemNotFoundException or ProviderNotFoundException
            or System.Management.Automation.DriveNotFoundException or NotSupportedException)
        {
            // Reported below, as for a path that is not a file.
        }

        WriteSandboxError(new SandboxException("ImportPathNotFound", SandboxErrorKind.NotFound,
            $"'{given}' is not a path in the file system.", given));
        return null;
    }
}
